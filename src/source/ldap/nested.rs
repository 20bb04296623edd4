//! Nested groups flattened: a group's members are its own users plus, transitively,
//! the users of every group it contains.
//!
//! Pure and cycle-safe. The group graph is split into strongly connected components
//! (petgraph's Kosaraju, iterative so that deep nesting cannot overflow the stack);
//! every group of a cycle has the same members, so each component is resolved once,
//! children before parents, and a cycle is found and reported once instead of being
//! walked forever. The work is linear in groups plus nesting edges, plus the size of
//! the member sets that are merged.

/// Groups by index: each with the users it names directly and the groups it contains.
#[derive(Debug, Default)]
pub struct Graph {
    /// Direct user members of group `g` (user indices).
    pub users: Vec<Vec<u32>>,
    /// Groups directly contained in group `g` (group indices).
    pub children: Vec<Vec<u32>>,
}

/// The flattened memberships.
#[derive(Debug, PartialEq, Eq)]
pub struct Flattened {
    /// Members of group `g`: user indices, sorted, without duplicates.
    pub members: Vec<Vec<u32>>,
    /// Each cycle once: the groups that contain each other, sorted by index.
    pub cycles: Vec<Vec<u32>>,
}

impl Graph {
    pub fn with_groups(n: usize) -> Graph {
        Graph {
            users: vec![Vec::new(); n],
            children: vec![Vec::new(); n],
        }
    }

    pub fn flatten(&self) -> Flattened {
        let (component, components) = self.components();
        let mut sets: Vec<Vec<u32>> = Vec::with_capacity(components.len());
        let mut cycles = Vec::new();
        // Which component last merged a child component: merge each child set once.
        let mut merged_into = vec![usize::MAX; components.len()];
        for (c, groups) in components.iter().enumerate() {
            let mut set: Vec<u32> = Vec::new();
            let mut cyclic = groups.len() > 1;
            for &g in groups {
                set.extend_from_slice(&self.users[g as usize]);
                for &child in &self.children[g as usize] {
                    let cc = component[child as usize];
                    if cc == c {
                        cyclic = true;
                    } else if merged_into[cc] != c {
                        merged_into[cc] = c;
                        set.extend_from_slice(&sets[cc]);
                    }
                }
            }
            set.sort_unstable();
            set.dedup();
            sets.push(set);
            if cyclic {
                let mut cycle = groups.clone();
                cycle.sort_unstable();
                cycles.push(cycle);
            }
        }
        cycles.sort();
        let members = component.iter().map(|&c| sets[c].clone()).collect();
        Flattened { members, cycles }
    }

    /// Strongly connected components, each listed after every component it reaches,
    /// and the component of each group.
    fn components(&self) -> (Vec<usize>, Vec<Vec<u32>>) {
        let n = self.children.len();
        let mut graph = petgraph::graph::DiGraph::<(), ()>::with_capacity(n, 0);
        for _ in 0..n {
            graph.add_node(());
        }
        graph.extend_with_edges(
            self.children
                .iter()
                .enumerate()
                .flat_map(|(g, children)| children.iter().map(move |&child| (g as u32, child))),
        );
        let components: Vec<Vec<u32>> = petgraph::algo::kosaraju_scc(&graph)
            .into_iter()
            .map(|groups| groups.into_iter().map(|g| g.index() as u32).collect())
            .collect();
        let mut component = vec![0; n];
        for (c, groups) in components.iter().enumerate() {
            for &g in groups {
                component[g as usize] = c;
            }
        }
        (component, components)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A graph from (users, children) per group.
    fn graph(groups: &[(&[u32], &[u32])]) -> Graph {
        Graph {
            users: groups.iter().map(|(u, _)| u.to_vec()).collect(),
            children: groups.iter().map(|(_, c)| c.to_vec()).collect(),
        }
    }

    fn check(groups: &[(&[u32], &[u32])], members: &[&[u32]], cycles: &[&[u32]]) {
        let got = graph(groups).flatten();
        let want = Flattened {
            members: members.iter().map(|m| m.to_vec()).collect(),
            cycles: cycles.iter().map(|c| c.to_vec()).collect(),
        };
        assert_eq!(got, want, "{groups:?}");
    }

    #[test]
    fn flat_groups_are_sorted_and_deduplicated() {
        check(&[(&[3, 1, 3], &[]), (&[], &[])], &[&[1, 3], &[]], &[]);
    }

    #[test]
    fn three_levels_deep() {
        // 0 ⊃ 1 ⊃ 2 ⊃ 3
        check(
            &[(&[0], &[1]), (&[1], &[2]), (&[2], &[3]), (&[3], &[])],
            &[&[0, 1, 2, 3], &[1, 2, 3], &[2, 3], &[3]],
            &[],
        );
    }

    #[test]
    fn diamond_counts_each_user_once() {
        // 0 ⊃ {1, 2}, both ⊃ 3
        check(
            &[(&[], &[1, 2]), (&[1], &[3]), (&[2], &[3]), (&[3, 1], &[])],
            &[&[1, 2, 3], &[1, 3], &[1, 2, 3], &[1, 3]],
            &[],
        );
    }

    #[test]
    fn a_cycle_is_reported_once_and_shares_its_members() {
        // 0 ⊃ 1 ⊃ 2 ⊃ 1 (1 and 2 form a cycle), 2 ⊃ 3
        check(
            &[(&[0], &[1]), (&[1], &[2]), (&[2], &[1, 3]), (&[3], &[])],
            &[&[0, 1, 2, 3], &[1, 2, 3], &[1, 2, 3], &[3]],
            &[&[1, 2]],
        );
        // A group that contains itself.
        check(&[(&[7], &[0])], &[&[7]], &[&[0]]);
        // Two separate cycles, reported in group order.
        check(
            &[(&[], &[1]), (&[1], &[0]), (&[2], &[3]), (&[3], &[2])],
            &[&[1], &[1], &[2, 3], &[2, 3]],
            &[&[0, 1], &[2, 3]],
        );
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        // A chain of 200,000 groups, the last one holding the only user.
        let n = 200_000u32;
        let mut g = Graph::with_groups(n as usize);
        for i in 0..n - 1 {
            g.children[i as usize].push(i + 1);
        }
        g.users[n as usize - 1].push(42);
        let f = g.flatten();
        assert!(f.cycles.is_empty());
        assert!(f.members.iter().all(|m| m == &[42]));
        // Closed into a ring: one cycle of every group, reported once.
        g.children[n as usize - 1].push(0);
        let f = g.flatten();
        assert_eq!(f.cycles.len(), 1);
        assert_eq!(f.cycles[0].len(), n as usize);
        assert!(f.members.iter().all(|m| m == &[42]));
    }
}
