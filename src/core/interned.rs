//! Strings (serials, thing names) stored compactly for batches of a million devices: one
//! string holding them all, and where each ends, instead of an allocation per name.

use std::hash::{BuildHasher, RandomState};

/// A list of names too large for one batch: its names add up to more than 4 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the names add up to more than 4 GiB; split the batch")]
pub struct TooLarge;

/// Names in one string, in the order added; looked up by number.
#[derive(Debug, Default, Clone)]
pub struct Arena {
    text: String,
    /// Where each name ends in `text` (4 bytes a name, not 8: the limit is 4 GiB of names).
    ends: Vec<u32>,
}

impl Arena {
    /// Adds a name; returns its number.
    pub fn push(&mut self, name: &str) -> Result<usize, TooLarge> {
        let end = u32::try_from(self.text.len() + name.len()).map_err(|_| TooLarge)?;
        self.text.push_str(name);
        self.ends.push(end);
        Ok(self.ends.len() - 1)
    }

    /// The name numbered `index` (which `push` returned).
    pub fn get(&self, index: usize) -> &str {
        let start = index.checked_sub(1).map_or(0, |i| self.ends[i] as usize);
        &self.text[start..self.ends[index] as usize]
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// Distinct names, each stored once and numbered in the order first seen, found again by
/// their hash.
#[derive(Default, Clone)]
pub struct Interner {
    names: Arena,
    /// Numbers of names, by the name's hash.
    table: hashbrown::HashTable<u32>,
    hasher: RandomState,
}

impl Interner {
    pub fn name(&self, index: usize) -> &str {
        self.names.get(index)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.names.iter()
    }

    /// The number of `name`, if it was added.
    pub fn find(&self, name: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(name);
        self.table
            .find(hash, |&i| self.names.get(i as usize) == name)
            .map(|&i| i as usize)
    }

    /// Adds `name` if new; returns its number and whether it was new.
    pub fn intern(&mut self, name: &str) -> Result<(usize, bool), TooLarge> {
        if let Some(index) = self.find(name) {
            return Ok((index, false));
        }
        let index = self.names.push(name)?;
        let number = u32::try_from(index).map_err(|_| TooLarge)?;
        let (hasher, names) = (&self.hasher, &self.names);
        let hash = hasher.hash_one(name);
        self.table
            .insert_unique(hash, number, |&i| hasher.hash_one(names.get(i as usize)));
        Ok((index, true))
    }
}

impl std::fmt::Debug for Interner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Interner({} names)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_names_are_found_again_and_kept_in_order() {
        let mut serials = Interner::default();
        for n in 0..5000 {
            assert_eq!(serials.intern(&format!("SN-{n:06}")), Ok((n, true)));
        }
        assert_eq!(serials.intern("SN-000042"), Ok((42, false)));
        assert_eq!(serials.find("SN-004999"), Some(4999));
        assert_eq!(serials.find("SN-005000"), None);
        assert_eq!(serials.name(7), "SN-000007");
        assert_eq!(serials.len(), 5000);
        assert_eq!(serials.iter().nth(3), Some("SN-000003"));
    }

    #[test]
    fn an_arena_keeps_empty_and_repeated_names_apart() {
        let mut arena = Arena::default();
        for name in ["a", "", "bc", "a"] {
            arena.push(name).unwrap();
        }
        assert_eq!(arena.iter().collect::<Vec<_>>(), ["a", "", "bc", "a"]);
    }
}
