//! Pure CPU work spread over the machine's cores, in order.
//!
//! Used by the LDAP reader once the directory server is done: copying each group's
//! member ids is independent from group to group; one thread per core takes blocks
//! of groups until none are left.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Below this many items a second thread costs more than it saves.
const MIN_CHUNK: usize = 256;

/// Items a thread takes at a time. Items differ in cost (a group of 20,000 members
/// beside groups of 10), so the threads take blocks until none are left instead of
/// one share each: none waits long for another at the end.
const BLOCK: usize = 32;

/// `items.iter().map(f).collect()`, computed on up to one thread per core. The
/// result is in the order of `items`; a panic in `f` propagates. A thread the system
/// refuses to start leaves its share to the others.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let threads = cores.min(items.len() / MIN_CHUNK).max(1);
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    // Each thread's blocks, as (index of the first item, results).
    let work = || {
        let mut done: Vec<(usize, Vec<R>)> = Vec::new();
        loop {
            let start = next.fetch_add(BLOCK, Ordering::Relaxed);
            if start >= items.len() {
                return done;
            }
            let block = &items[start..items.len().min(start + BLOCK)];
            done.push((start, block.iter().map(&f).collect()));
        }
    };
    let mut blocks = std::thread::scope(|s| {
        let started: Vec<_> = (1..threads)
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(s, work).ok())
            .collect();
        let mut blocks = work();
        for handle in started {
            match handle.join() {
                Ok(theirs) => blocks.extend(theirs),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        blocks
    });
    blocks.sort_unstable_by_key(|&(start, _)| start);
    let mut out = Vec::with_capacity(items.len());
    for (_, results) in blocks {
        out.extend(results);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_the_order_of_the_items() {
        for n in [0, 1, 255, 256, 257, 1000, 4099] {
            let items: Vec<usize> = (0..n).collect();
            let doubled = super::map(&items, |i| i * 2);
            assert_eq!(
                doubled,
                items.iter().map(|i| i * 2).collect::<Vec<_>>(),
                "n = {n}"
            );
        }
    }
}
