//! A map from strings to `u32` indexes, its keys kept side by side in one buffer.
//!
//! Resolving 300,000 member values against 100,000 user DNs or ids is one hash
//! lookup each, and a hit compares the key. In a `HashMap<String, u32>` that compare
//! reads a separate heap allocation per key, scattered over a heap of hundreds of
//! megabytes: most lookups wait on a cache miss and a TLB miss there (about half the
//! time of resolving members, see BENCHMARKS.md). Here the keys are copied into one
//! buffer of a few megabytes, and [`StrIndex::get_each`] looks keys up sixteen at a
//! time: it first reads every slot they hash to, then every candidate key, then
//! compares, so the misses of sixteen lookups overlap instead of queueing.
//!
//! Building the index is the same story: a key placed as each entry streams in
//! waits on a miss in the table, so [`StrIndex::insert_each`] reads the slots of
//! sixteen keys before it places any of them.
//!
//! The table is open addressing with linear probing, at most half full. A key starts
//! at the slot the top bits of its hash pick. A slot keeps the top 32 bits as its
//! tag, so a probe that meets another key rarely reads it, and growing the table
//! places every key from its tag alone, in order, without reading or hashing keys
//! (up to 2^31 slots; past that the keys are hashed again).

use std::hash::BuildHasher;

/// The keys would pass 4 GiB, more than a `u32` offset reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("more than 4 GiB of keys to index")]
pub struct Full;

/// `tag == 0` is an empty slot; a used one has the low bit set.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    tag: u32,
    start: u32,
    len: u32,
    value: u32,
}

/// How many lookups [`StrIndex::get_each`] keeps in flight.
const BATCH: usize = 16;

/// Strings to `u32`s. Inserting a key that is present replaces its value.
#[derive(Debug, Default)]
pub struct StrIndex {
    keys: String,
    /// Empty, or a power of two long.
    slots: Vec<Slot>,
    len: usize,
    hasher: foldhash::fast::RandomState,
}

impl StrIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `entries` keys of `bytes` bytes in all without growing.
    pub fn with_capacity(entries: usize, bytes: usize) -> Self {
        StrIndex {
            keys: String::with_capacity(bytes),
            slots: vec![Slot::default(); table_size(entries)],
            len: 0,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, key: &str) -> Option<u32> {
        let mut found = None;
        self.get_each([key], |_, v| found = v);
        found
    }

    /// Looks every key up, in order, calling `found` with each key and its value.
    pub fn get_each<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
        mut found: impl FnMut(&'k str, Option<u32>),
    ) {
        let mut keys = keys.into_iter();
        if self.slots.is_empty() {
            keys.for_each(|k| found(k, None));
            return;
        }
        let mask = self.slots.len() - 1;
        let mut batch: [(&str, u64, usize); BATCH] = [("", 0, 0); BATCH];
        loop {
            // 1. Hash up to BATCH keys and read the slot each starts at.
            let mut n = 0;
            for key in keys.by_ref().take(BATCH) {
                let hash = self.hasher.hash_one(key);
                let at = home(hash, mask);
                std::hint::black_box(self.slots[at].tag);
                batch[n] = (key, hash, at);
                n += 1;
            }
            if n == 0 {
                return;
            }
            // 2. Find each key's first candidate and read the start of its key.
            for (_, hash, at) in &mut batch[..n] {
                *at = self.next_candidate(*at, tag(*hash), mask);
                if let Some(slot) = self.slots.get(*at).filter(|s| s.tag != 0) {
                    std::hint::black_box(self.keys.as_bytes().get(slot.start as usize));
                }
            }
            // 3. Compare; a candidate that is another key moves on to the next.
            for &(key, hash, at) in &batch[..n] {
                let slot = self.slots[self.locate(key, hash, at, mask)];
                found(key, (slot.tag != 0).then_some(slot.value));
            }
        }
    }

    /// The first slot from `at` on that is empty or has `tag`.
    fn next_candidate(&self, mut at: usize, tag: u32, mask: usize) -> usize {
        loop {
            let t = self.slots[at].tag;
            if t == 0 || t == tag {
                return at;
            }
            at = (at + 1) & mask;
        }
    }

    /// From `at`, a candidate for `key` ([`StrIndex::next_candidate`]), the slot that
    /// holds `key`, or the empty slot where it would go.
    fn locate(&self, key: &str, hash: u64, mut at: usize, mask: usize) -> usize {
        loop {
            let slot = &self.slots[at];
            if slot.tag == 0 || self.key(slot) == key {
                return at;
            }
            at = self.next_candidate((at + 1) & mask, tag(hash), mask);
        }
    }

    fn key(&self, slot: &Slot) -> &str {
        &self.keys[slot.start as usize..(slot.start + slot.len) as usize]
    }

    /// Sets `key` to `value`; returns the value it had.
    pub fn insert(&mut self, key: &str, value: u32) -> Result<Option<u32>, Full> {
        self.reserve(1);
        let hash = self.hasher.hash_one(key);
        self.place(key, hash, value)
    }

    /// Inserts every item, in order, as [`StrIndex::insert`] would one at a time;
    /// `keep(key, new, old)` picks the value of a key that is already there. The slots
    /// of sixteen keys are read before any of them is placed, so their cache misses
    /// overlap: an index built entry by entry as a search streams in is otherwise a
    /// cache miss per entry.
    pub fn insert_each<'k>(
        &mut self,
        items: impl IntoIterator<Item = (&'k str, u32)>,
        mut keep: impl FnMut(&'k str, u32, u32) -> u32,
    ) -> Result<(), Full> {
        let mut items = items.into_iter();
        let mut batch: [(&str, u32, u64); BATCH] = [("", 0, 0); BATCH];
        loop {
            let mut n = 0;
            for (key, value) in items.by_ref().take(BATCH) {
                batch[n] = (key, value, self.hasher.hash_one(key));
                n += 1;
            }
            if n == 0 {
                return Ok(());
            }
            self.reserve(n);
            let mask = self.slots.len() - 1;
            for &(_, _, hash) in &batch[..n] {
                std::hint::black_box(self.slots[home(hash, mask)].tag);
            }
            for &(key, value, hash) in &batch[..n] {
                if let Some(old) = self.place(key, hash, value)? {
                    let kept = keep(key, value, old);
                    if kept != value {
                        self.place(key, hash, kept)?;
                    }
                }
            }
        }
    }

    /// Grows the table until `more` keys fit with it at most half full.
    fn reserve(&mut self, more: usize) {
        while (self.len + more) * 2 > self.slots.len() {
            self.grow();
        }
    }

    /// Sets `key`, whose hash is `hash`, to `value` in a table with room for it;
    /// returns the value it had.
    fn place(&mut self, key: &str, hash: u64, value: u32) -> Result<Option<u32>, Full> {
        let mask = self.slots.len() - 1;
        let first = self.next_candidate(home(hash, mask), tag(hash), mask);
        let at = self.locate(key, hash, first, mask);
        if self.slots[at].tag != 0 {
            return Ok(Some(std::mem::replace(&mut self.slots[at].value, value)));
        }
        let start = u32::try_from(self.keys.len()).map_err(|_| Full)?;
        let len = u32::try_from(key.len()).map_err(|_| Full)?;
        start.checked_add(len).ok_or(Full)?;
        self.keys.push_str(key);
        self.slots[at] = Slot {
            tag: tag(hash),
            start,
            len,
            value,
        };
        self.len += 1;
        Ok(None)
    }

    /// Doubles the table (at least 16 slots) and places every key again. A key's
    /// slot comes from the top bits of its hash, which its tag holds: up to 2^31
    /// slots the keys are not read, and the old slots map in order onto the new ones.
    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); size]);
        let mask = size - 1;
        for slot in old.into_iter().filter(|s| s.tag != 0) {
            let mut at = if size <= 1 << 31 {
                home(u64::from(slot.tag) << 32, mask)
            } else {
                home(self.hasher.hash_one(self.key(&slot)), mask)
            };
            while self.slots[at].tag != 0 {
                at = (at + 1) & mask;
            }
            self.slots[at] = slot;
        }
    }
}

/// The slot a key starts probing at in a table of `mask + 1` slots: the top bits
/// of its hash. Up to 2^31 slots these are bits of the tag too.
fn home(hash: u64, mask: usize) -> usize {
    let bits = mask.count_ones();
    if bits == 0 {
        0
    } else {
        (hash >> (64 - bits)) as usize
    }
}

/// The table size that holds `entries` at most half full.
fn table_size(entries: usize) -> usize {
    if entries == 0 {
        0
    } else {
        (entries * 2).next_power_of_two().max(16)
    }
}

/// The top 32 bits of the hash, never 0. The slot a key starts at is the top bits
/// too, so keys that start at one slot tell apart by the tag's other bits (14 of
/// them at 100,000 keys); keys from other slots that a probe passes differ anyway.
fn tag(hash: u64) -> u32 {
    (hash >> 32) as u32 | 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn finds_what_was_inserted_and_nothing_else() {
        let mut index = StrIndex::new();
        assert!(index.is_empty());
        assert_eq!(index.get("anything"), None);
        for i in 0..10_000u32 {
            assert_eq!(index.insert(&format!("uid=user{i},ou=people"), i), Ok(None));
        }
        assert_eq!(index.len(), 10_000);
        for i in 0..10_000u32 {
            assert_eq!(index.get(&format!("uid=user{i},ou=people")), Some(i));
        }
        assert_eq!(index.get("uid=user10000,ou=people"), None);
        assert_eq!(index.get("uid=user1,ou=peopl"), None);
        assert_eq!(index.get("uid=user1,ou=people,"), None);
        assert_eq!(index.get(""), None);
    }

    #[test]
    fn a_second_insert_replaces_and_keeps_one_entry() {
        let mut index = StrIndex::with_capacity(2, 8);
        assert_eq!(index.insert("a", 1), Ok(None));
        assert_eq!(index.insert("a", 2), Ok(Some(1)));
        assert_eq!(index.len(), 1);
        assert_eq!(index.get("a"), Some(2));
    }

    #[test]
    fn keys_that_are_prefixes_of_each_other_stay_apart() {
        let keys = ["", "a", "ab", "abc", "b", "bc", "é", "éa"];
        let mut index = StrIndex::new();
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(index.insert(key, i as u32), Ok(None));
        }
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(index.get(key), Some(i as u32), "{key:?}");
        }
    }

    /// Batches of every length, hits and misses mixed, against a `HashMap`; the
    /// table is grown from empty, so long probe runs and wrap-arounds occur.
    #[test]
    fn get_each_answers_like_a_hash_map_in_order() {
        let mut index = StrIndex::new();
        let mut reference = HashMap::new();
        for i in 0..5_000u32 {
            let key = format!("{:x}", i.wrapping_mul(2_654_435_761));
            assert_eq!(index.insert(&key, i), Ok(reference.insert(key, i)));
        }
        let asked: Vec<String> = (0..7_000u32)
            .map(|i| format!("{:x}", i.wrapping_mul(2_654_435_761)))
            .collect();
        for len in [0, 1, 15, 16, 17, 33, 7_000] {
            let mut got = Vec::new();
            index.get_each(asked[..len].iter().map(String::as_str), |k, v| got.push((k, v)));
            let expected: Vec<(&str, Option<u32>)> = asked[..len]
                .iter()
                .map(|k| (k.as_str(), reference.get(k).copied()))
                .collect();
            assert_eq!(got, expected, "batch of {len}");
        }
    }

    #[test]
    fn an_empty_index_answers_none_to_every_key() {
        let index = StrIndex::with_capacity(0, 0);
        let mut got = Vec::new();
        index.get_each(["a", "b"], |k, v| got.push((k, v)));
        assert_eq!(got, [("a", None), ("b", None)]);
    }
}

/// Random keys (repeats, prefixes of other keys, the empty key, non-ASCII) against a
/// `HashMap`, from fixed seeds.
#[cfg(test)]
mod props {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;

    fn random_key(rng: &mut rand::rngs::StdRng, pool: &[String]) -> String {
        match rng.random_range(0..6) {
            0 => String::new(),
            1 if !pool.is_empty() => {
                // a prefix of an existing key (on a char boundary)
                let k = &pool[rng.random_range(0..pool.len())];
                let cut: Vec<usize> = k.char_indices().map(|(i, _)| i).chain([k.len()]).collect();
                k[..cut[rng.random_range(0..cut.len())]].to_owned()
            }
            2 => {
                let n = rng.random_range(0..4);
                (0..n)
                    .map(|_| ['é', 'ß', 'Σ', '日', 'a', '\0'][rng.random_range(0..6)])
                    .collect()
            }
            _ => {
                let n = rng.random_range(0..12);
                (0..n)
                    .map(|_| (b'a' + rng.random_range(0..3u8)) as char)
                    .collect()
            }
        }
    }

    #[test]
    fn inserts_and_lookups_answer_like_a_hash_map() {
        for seed in 0..300u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let (entries, bytes) = (rng.random_range(0..40), rng.random_range(0..100));
            let mut index = if seed % 2 == 0 {
                StrIndex::new()
            } else {
                StrIndex::with_capacity(entries, bytes)
            };
            let mut reference: HashMap<String, u32> = HashMap::new();
            let mut pool: Vec<String> = Vec::new();
            let n = rng.random_range(0..2000);
            for _ in 0..n {
                let key = if !pool.is_empty() && rng.random_bool(0.3) {
                    pool[rng.random_range(0..pool.len())].clone()
                } else {
                    random_key(&mut rng, &pool)
                };
                let v: u32 = rng.random();
                assert_eq!(index.insert(&key, v), Ok(reference.insert(key.clone(), v)));
                pool.push(key);
                assert_eq!(index.len(), reference.len());
                // table never more than half full, an empty slot remains
                assert!(index.slots.iter().any(|s| s.tag == 0));
            }
            let mut asked: Vec<String> = Vec::new();
            for _ in 0..rng.random_range(0..500) {
                asked.push(if !pool.is_empty() && rng.random_bool(0.5) {
                    pool[rng.random_range(0..pool.len())].clone()
                } else {
                    random_key(&mut rng, &pool)
                });
            }
            for len in [0usize, 1, 2, 15, 16, 17, 31, 32, 33, asked.len()] {
                let len = len.min(asked.len());
                let mut got = Vec::new();
                index.get_each(asked[..len].iter().map(String::as_str), |k, v| {
                    got.push((k.to_owned(), v))
                });
                let want: Vec<(String, Option<u32>)> = asked[..len]
                    .iter()
                    .map(|k| (k.clone(), reference.get(k).copied()))
                    .collect();
                assert_eq!(got, want, "seed {seed} len {len}");
                for k in &asked[..len] {
                    assert_eq!(index.get(k), reference.get(k).copied());
                }
            }
        }
    }

    /// `insert_each` against one `insert` at a time on a `HashMap`, with a `keep` that
    /// marks a key seen twice under different values (as the uid index does): batches
    /// that straddle a growth, repeats within one batch, and keys already present.
    #[test]
    fn insert_each_answers_like_inserts_one_at_a_time() {
        const TWICE: u32 = u32::MAX;
        for seed in 0..200u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut index = if seed % 2 == 0 {
                StrIndex::new()
            } else {
                StrIndex::with_capacity(rng.random_range(0..50), 0)
            };
            let mut reference: HashMap<String, u32> = HashMap::new();
            let mut pool: Vec<String> = Vec::new();
            for _ in 0..rng.random_range(0..12) {
                let items: Vec<(String, u32)> = (0..rng.random_range(0..300))
                    .map(|_| {
                        let key = if !pool.is_empty() && rng.random_bool(0.3) {
                            pool[rng.random_range(0..pool.len())].clone()
                        } else {
                            random_key(&mut rng, &pool)
                        };
                        pool.push(key.clone());
                        (key, rng.random_range(0..4))
                    })
                    .collect();
                let mut kept = Vec::new();
                let keep = |key: &str, new: u32, old: u32| {
                    kept.push((key.to_owned(), new, old));
                    if new == old { new } else { TWICE }
                };
                index
                    .insert_each(items.iter().map(|(k, v)| (k.as_str(), *v)), keep)
                    .expect("fits");
                let mut expected_kept = Vec::new();
                for (key, value) in &items {
                    match reference.get(key).copied() {
                        Some(old) => {
                            expected_kept.push((key.clone(), *value, old));
                            let v = if old == *value { old } else { TWICE };
                            reference.insert(key.clone(), v);
                        }
                        None => {
                            reference.insert(key.clone(), *value);
                        }
                    }
                }
                assert_eq!(kept, expected_kept, "seed {seed}");
                assert_eq!(index.len(), reference.len(), "seed {seed}");
                assert!(
                    index.slots.len() >= 2 * index.len(),
                    "seed {seed}: more than half full"
                );
            }
            for key in pool.iter().chain([&"never inserted".to_owned()]) {
                assert_eq!(index.get(key), reference.get(key).copied(), "seed {seed} {key:?}");
            }
        }
    }

    /// Growing places a key by its tag: every key is still found after many
    /// doublings, from tables made at every small capacity.
    #[test]
    fn tables_sized_too_small_grow_and_keep_every_key() {
        for cap in 0..20 {
            let mut index = StrIndex::with_capacity(cap, 0);
            for i in 0..100u32 {
                assert_eq!(index.insert(&i.to_string(), i), Ok(None));
                for j in 0..=i {
                    assert_eq!(index.get(&j.to_string()), Some(j));
                }
                assert_eq!(index.get("x"), None);
            }
        }
        // Sixteen doublings, to a table of 2^17 slots.
        let mut index = StrIndex::new();
        let keys: Vec<String> = (0..60_000u32).map(|i| format!("uid=u{i},ou=people")).collect();
        index
            .insert_each(keys.iter().zip(0..).map(|(k, i)| (k.as_str(), i)), |_, new, _| {
                new
            })
            .expect("fits");
        assert_eq!(index.slots.len(), 1 << 17);
        let mut found = Vec::new();
        index.get_each(keys.iter().map(String::as_str), |_, v| found.push(v));
        assert_eq!(found, (0..60_000).map(Some).collect::<Vec<_>>());
    }
}
