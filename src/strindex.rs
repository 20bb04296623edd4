//! A map from strings to `u32` indexes, its keys kept side by side in one buffer.
//!
//! Resolving 300,000 member values against 100,000 user DNs or ids is one hash
//! lookup each, and a hit compares the key. In a `HashMap<String, u32>` that compare
//! reads a separate heap allocation per key, scattered over a heap of hundreds of
//! megabytes: most lookups wait on a cache miss and a TLB miss there (about half the
//! time of resolving members, see BENCHMARKS.md). Here the keys are copied into one
//! buffer of a few megabytes and a slot is three `u32`s, so the compare reads memory
//! the cache and TLB can hold.

use std::hash::BuildHasher;

use hashbrown::HashTable;

/// The keys would pass 4 GiB, more than a `u32` offset reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("more than 4 GiB of keys to index")]
pub struct Full;

#[derive(Debug, Clone, Copy)]
struct Slot {
    start: u32,
    len: u32,
    value: u32,
}

/// Strings to `u32`s. Inserting a key that is present replaces its value.
#[derive(Debug, Default)]
pub struct StrIndex {
    keys: String,
    table: HashTable<Slot>,
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
            table: HashTable::with_capacity(entries),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    fn key(&self, slot: &Slot) -> &str {
        &self.keys[slot.start as usize..(slot.start + slot.len) as usize]
    }

    pub fn get(&self, key: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        self.table
            .find(hash, |slot| self.key(slot) == key)
            .map(|slot| slot.value)
    }

    /// Sets `key` to `value`; returns the value it had.
    pub fn insert(&mut self, key: &str, value: u32) -> Result<Option<u32>, Full> {
        let hash = self.hasher.hash_one(key);
        let StrIndex { keys, table, hasher } = self;
        if let Some(slot) = table.find_mut(hash, |slot| {
            &keys[slot.start as usize..(slot.start + slot.len) as usize] == key
        }) {
            return Ok(Some(std::mem::replace(&mut slot.value, value)));
        }
        let start = u32::try_from(keys.len()).map_err(|_| Full)?;
        let len = u32::try_from(key.len()).map_err(|_| Full)?;
        start.checked_add(len).ok_or(Full)?;
        keys.push_str(key);
        let slot = Slot { start, len, value };
        table.insert_unique(hash, slot, |slot| {
            hasher.hash_one(&keys[slot.start as usize..(slot.start + slot.len) as usize])
        });
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_was_inserted_and_nothing_else() {
        let mut index = StrIndex::new();
        assert!(index.is_empty());
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
        let mut index = StrIndex::new();
        for (i, key) in ["", "a", "ab", "abc", "b", "bc", "é", "éa"].iter().enumerate() {
            assert_eq!(index.insert(key, i as u32), Ok(None));
        }
        for (i, key) in ["", "a", "ab", "abc", "b", "bc", "é", "éa"].iter().enumerate() {
            assert_eq!(index.get(key), Some(i as u32), "{key:?}");
        }
    }
}
