//! A read-only map from short strings to small integers, for the hot path.
//!
//! Keys up to [`INLINE`] bytes live inside their slot, next to their hash,
//! so a lookup usually touches a single cache line: no pointer to follow to
//! compare the key. Open addressing with linear probing, at most half full.

use std::hash::BuildHasher;

const INLINE: usize = 26;
const EMPTY: u16 = u16::MAX;

#[derive(Clone)]
struct Slot {
    hash: u64,
    value: u32,
    len: u16,
    inline: [u8; INLINE],
    long: Option<Box<str>>,
}

impl Slot {
    const VACANT: Slot = Slot {
        hash: 0,
        value: 0,
        len: EMPTY,
        inline: [0; INLINE],
        long: None,
    };

    #[inline]
    fn key(&self) -> &[u8] {
        match &self.long {
            Some(long) => long.as_bytes(),
            None => self.inline.get(..self.len as usize).unwrap_or_default(),
        }
    }
}

/// Maps strings to `u32`; built once, then only read.
#[derive(Clone)]
pub(crate) struct StrTable {
    slots: Box<[Slot]>,
    mask: usize,
    len: usize,
    state: foldhash::fast::RandomState,
}

impl std::fmt::Debug for StrTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.slots
                    .iter()
                    .filter(|s| s.len != EMPTY)
                    .map(|s| (String::from_utf8_lossy(s.key()), s.value)),
            )
            .finish()
    }
}

impl StrTable {
    /// A table of `entries`; a later duplicate key is reported as `Err(key)`.
    pub(crate) fn build<'a>(
        entries: impl IntoIterator<Item = (&'a str, u32)>,
    ) -> Result<Self, &'a str> {
        let entries: Vec<(&str, u32)> = entries.into_iter().collect();
        let mut table = Self::from_unique(std::iter::empty());
        table = Self {
            slots: vec![Slot::VACANT; (entries.len() * 2).next_power_of_two().max(8)]
                .into_boxed_slice(),
            ..table
        };
        table.mask = table.slots.len() - 1;
        for (key, value) in entries {
            if !table.insert(key, value) {
                return Err(key);
            }
        }
        Ok(table)
    }

    /// A table of entries whose keys are known to be distinct (a repeated
    /// key keeps its first value).
    pub(crate) fn from_unique<'a>(entries: impl IntoIterator<Item = (&'a str, u32)>) -> Self {
        let entries: Vec<(&str, u32)> = entries.into_iter().collect();
        let capacity = (entries.len() * 2).next_power_of_two().max(8);
        let mut table = Self {
            slots: vec![Slot::VACANT; capacity].into_boxed_slice(),
            mask: capacity - 1,
            len: 0,
            state: foldhash::fast::RandomState::default(),
        };
        for (key, value) in entries {
            table.insert(key, value);
        }
        table
    }

    fn insert(&mut self, key: &str, value: u32) -> bool {
        let hash = self.state.hash_one(key);
        let mut i = hash as usize & self.mask;
        loop {
            let Some(slot) = self.slots.get_mut(i) else {
                return false;
            };
            if slot.len == EMPTY {
                let mut filled = Slot {
                    hash,
                    value,
                    len: u16::try_from(key.len()).unwrap_or(EMPTY - 1),
                    inline: [0; INLINE],
                    long: None,
                };
                match filled.inline.get_mut(..key.len()) {
                    Some(inline) if key.len() <= INLINE => inline.copy_from_slice(key.as_bytes()),
                    _ => filled.long = Some(key.into()),
                }
                *slot = filled;
                self.len += 1;
                return true;
            }
            if slot.hash == hash && slot.key() == key.as_bytes() {
                return false;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The value of `key`.
    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<u32> {
        let hash = self.state.hash_one(key);
        let mut i = hash as usize & self.mask;
        loop {
            let slot = self.slots.get(i)?;
            if slot.len == EMPTY {
                return None;
            }
            if slot.hash == hash && slot.key() == key.as_bytes() {
                return Some(slot.value);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// How many keys there are.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_was_put() {
        let long = "x".repeat(64);
        let keys: Vec<String> = (0..300)
            .map(|i| format!("key-{i}"))
            .chain([long.clone(), String::new()])
            .collect();
        let table =
            StrTable::build(keys.iter().enumerate().map(|(i, k)| (k.as_str(), i as u32))).unwrap();
        assert_eq!(table.len(), keys.len());
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(table.get(k), Some(i as u32), "{k}");
        }
        assert_eq!(table.get("key-300"), None);
        assert_eq!(table.get(&"x".repeat(63)), None);
        assert_eq!(
            StrTable::build([("a", 1), ("b", 2), ("a", 3)]).unwrap_err(),
            "a"
        );
        let empty = StrTable::build([]).unwrap();
        assert_eq!(empty.get("a"), None);
    }
}
