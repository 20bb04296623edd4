//! Generates a synthetic directory for benchmarks and scale tests, deterministic from
//! a seed: N users and M groups with a realistic shape (most groups small, a few with
//! 10,000+ members, some nested), written as CSV (members flattened) and as LDIF
//! (groupOfNames, nesting kept, entryUUID given so ids are stable).
//!
//! `--change-percent P` writes the same directory with P% of the users' mail changed
//! and P% of the memberships moved, for "what does a small change cost" runs, and
//! `changes.ldif`: those changes as `ldapmodify` input for a server holding the
//! directory without them.
//!
//! cargo run --release --example gendir -- --users 100000 --groups 10000 --seed 1 --out DIR

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Clone)]
struct Args {
    users: usize,
    groups: usize,
    seed: u64,
    out: PathBuf,
    base_dn: String,
    change_percent: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        users: 1000,
        groups: 100,
        seed: 1,
        out: PathBuf::from("."),
        base_dn: "dc=example,dc=com".into(),
        change_percent: 0.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--users" => args.users = value()?.parse().map_err(|e| format!("--users: {e}"))?,
            "--groups" => args.groups = value()?.parse().map_err(|e| format!("--groups: {e}"))?,
            "--seed" => args.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--out" => args.out = PathBuf::from(value()?),
            "--base-dn" => args.base_dn = value()?,
            "--change-percent" => {
                args.change_percent = value()?.parse().map_err(|e| format!("--change-percent: {e}"))?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// A UUID made from a kind and an index: stable across runs and seeds.
fn uuid(kind: u8, i: usize) -> String {
    format!(
        "{:08x}-0000-4000-8{:03x}-{:012x}",
        kind as u32,
        kind as u32 & 0xfff,
        i
    )
}

struct Dir {
    /// Per user: mail suffix generation (bumped by changes).
    mail_gen: Vec<u32>,
    /// Per group: direct user members.
    members: Vec<BTreeSet<usize>>,
    /// Per group: nested groups (always of a higher index, so no cycles).
    nested: Vec<Vec<usize>>,
}

fn generate(args: &Args) -> Dir {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let n = args.users.max(1);
    let big = (n / 10).clamp(1, 20_000);
    let mut members = Vec::with_capacity(args.groups);
    let mut nested = Vec::with_capacity(args.groups);
    for g in 0..args.groups {
        let size = if g < 10 {
            rng.random_range(big / 2..=big)
        } else if g < 100 {
            rng.random_range(100..=1000)
        } else {
            rng.random_range(2..=30)
        }
        .clamp(1, n);
        let mut set = BTreeSet::new();
        while set.len() < size {
            set.insert(rng.random_range(0..n));
        }
        members.push(set);
        let mut sub = Vec::new();
        if g >= 100 && g % 20 == 0 {
            for _ in 0..rng.random_range(1..=2) {
                if g + 1 < args.groups {
                    sub.push(rng.random_range(g + 1..args.groups));
                }
            }
        }
        nested.push(sub);
    }
    let mut dir = Dir {
        mail_gen: vec![0; n],
        members,
        nested,
    };
    if args.change_percent > 0.0 {
        let mut rng = StdRng::seed_from_u64(args.seed ^ 0x5eed);
        let users_changed = ((n as f64) * args.change_percent / 100.0).ceil() as usize;
        for _ in 0..users_changed {
            let u = rng.random_range(0..n);
            dir.mail_gen[u] += 1;
        }
        let total: usize = dir.members.iter().map(BTreeSet::len).sum();
        let moves = ((total as f64) * args.change_percent / 100.0).ceil() as usize;
        for _ in 0..moves {
            let g = rng.random_range(0..dir.members.len());
            let set = &mut dir.members[g];
            if set.len() > 1 && rng.random_bool(0.5) {
                if let Some(&victim) = set.iter().nth(rng.random_range(0..set.len())) {
                    set.remove(&victim);
                }
            } else {
                set.insert(rng.random_range(0..n));
            }
        }
    }
    dir
}

/// Direct members plus those of nested groups, transitively.
fn flattened(dir: &Dir, g: usize, memo: &mut Vec<Option<BTreeSet<usize>>>) -> BTreeSet<usize> {
    if let Some(done) = &memo[g] {
        return done.clone();
    }
    let mut all = dir.members[g].clone();
    for &sub in &dir.nested[g] {
        all.extend(flattened(dir, sub, memo));
    }
    memo[g] = Some(all.clone());
    all
}

/// `changed` as modifications of `base`: each user's new mail, each group's new
/// direct members.
fn changes(base: &Dir, changed: &Dir, b: &str) -> Result<String, std::fmt::Error> {
    let mut ldif = String::new();
    for (i, (old, new)) in base.mail_gen.iter().zip(&changed.mail_gen).enumerate() {
        if old != new {
            writeln!(
                ldif,
                "dn: uid=user{i:06},ou=people,{b}\nchangetype: modify\nreplace: mail\n\
                 mail: user{i:06}.v{new}@example.com\n-\n"
            )?;
        }
    }
    for (g, (old, new)) in base.members.iter().zip(&changed.members).enumerate() {
        if old != new {
            writeln!(
                ldif,
                "dn: cn=group{g:05},ou=groups,{b}\nchangetype: modify\nreplace: member"
            )?;
            for u in new {
                writeln!(ldif, "member: uid=user{u:06},ou=people,{b}")?;
            }
            for sub in &changed.nested[g] {
                writeln!(ldif, "member: cn=group{sub:05},ou=groups,{b}")?;
            }
            writeln!(ldif, "-\n")?;
        }
    }
    Ok(ldif)
}

fn write(path: PathBuf, text: &str) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(text.as_bytes())?;
    f.flush()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    std::fs::create_dir_all(&args.out)?;
    let dir = generate(&args);
    let b = &args.base_dn;

    let mut users = String::from("id,username,email,first_name,last_name,display_name\n");
    let mut ldif = format!(
        "dn: {b}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: {}\n\n\
         dn: ou=people,{b}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{b}\nobjectClass: organizationalUnit\nou: groups\n\n",
        b.split(',')
            .next()
            .and_then(|d| d.strip_prefix("dc="))
            .unwrap_or("example")
    );
    for (i, mail_gen) in dir.mail_gen.iter().enumerate() {
        let uid = format!("user{i:06}");
        let mail = if *mail_gen == 0 {
            format!("{uid}@example.com")
        } else {
            format!("{uid}.v{mail_gen}@example.com")
        };
        let id = uuid(1, i);
        writeln!(users, "{id},{uid},{mail},First{i},Last{i},User {i}")?;
        write!(
            ldif,
            "dn: uid={uid},ou=people,{b}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: User {i}\nsn: Last{i}\n\
             givenName: First{i}\ndisplayName: User {i}\nmail: {mail}\nentryUUID: {id}\n\n"
        )?;
    }
    let mut groups = String::from("id,name,members\n");
    let mut memo = vec![None; dir.members.len()];
    for g in 0..dir.members.len() {
        let name = format!("group{g:05}");
        let id = uuid(2, g);
        let flat = flattened(&dir, g, &mut memo);
        let list: Vec<String> = flat.iter().map(|u| uuid(1, *u)).collect();
        writeln!(groups, "{id},{name},{}", list.join(";"))?;
        write!(
            ldif,
            "dn: cn={name},ou=groups,{b}\nobjectClass: groupOfNames\ncn: {name}\nentryUUID: {id}\n"
        )?;
        for u in &dir.members[g] {
            writeln!(ldif, "member: uid=user{u:06},ou=people,{b}")?;
        }
        for sub in &dir.nested[g] {
            writeln!(ldif, "member: cn=group{sub:05},ou=groups,{b}")?;
        }
        ldif.push('\n');
    }
    if args.change_percent > 0.0 {
        let base = generate(&Args {
            change_percent: 0.0,
            ..args.clone()
        });
        write(args.out.join("changes.ldif"), &changes(&base, &dir, b)?)?;
    }
    write(args.out.join("users.csv"), &users)?;
    write(args.out.join("groups.csv"), &groups)?;
    write(args.out.join("directory.ldif"), &ldif)?;
    let memberships: usize = (0..dir.members.len())
        .map(|g| memo[g].as_ref().map_or(0, BTreeSet::len))
        .sum();
    eprintln!(
        "wrote {} users, {} groups, {memberships} memberships (flattened) to {}",
        dir.mail_gen.len(),
        dir.members.len(),
        args.out.display()
    );
    Ok(())
}
