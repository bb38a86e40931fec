//! Keyset pagination.
//!
//! Lists return a [`Page`] of at most [`PageSize`] items and, when more may
//! follow, an opaque [`Cursor`] naming the last item returned. Asking for the
//! page after that cursor continues from that item's key, so rows inserted
//! meanwhile never make an item appear twice or be skipped.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// How many items a page holds: 1 to 1000, 50 by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageSize(u16);

impl PageSize {
    /// The size used when none is given.
    pub const DEFAULT: PageSize = PageSize(50);
    /// The largest size accepted.
    pub const MAX: PageSize = PageSize(1000);

    /// Validates a page size.
    pub fn new(size: usize) -> Result<Self, ValidationError> {
        match u16::try_from(size) {
            Ok(n) if (1..=Self::MAX.0).contains(&n) => Ok(Self(n)),
            _ => Err(ValidationError::PageSize { size }),
        }
    }

    /// The size as a number.
    pub const fn get(self) -> usize {
        self.0 as usize
    }
}

impl Default for PageSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// An opaque position in a list, handed out with a [`Page`] and given back
/// to fetch the next one. Only the list that issued it accepts it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(String);

impl Cursor {
    /// Wraps a cursor received from a client (validated when used).
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The cursor text, to hand to a client.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Encodes a key for the list named `list`. For store implementations.
    pub fn encode(list: &str, key: impl fmt::Display) -> Self {
        Self(URL_SAFE_NO_PAD.encode(format!("{list}:{key}")))
    }

    /// Decodes a key encoded by [`Cursor::encode`] for the list named
    /// `list`; any other cursor is [`ValidationError::Cursor`].
    pub fn decode<K: std::str::FromStr>(&self, list: &str) -> Result<K, ValidationError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(&self.0)
            .map_err(|_| ValidationError::Cursor)?;
        let text = String::from_utf8(bytes).map_err(|_| ValidationError::Cursor)?;
        let key = text
            .strip_prefix(list)
            .and_then(|rest| rest.strip_prefix(':'))
            .ok_or(ValidationError::Cursor)?;
        key.parse().map_err(|_| ValidationError::Cursor)
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cursor({})", self.0)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which page to fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// How many items at most.
    pub size: PageSize,
    /// Continue after this cursor; `None` starts at the beginning.
    pub after: Option<Cursor>,
}

impl PageRequest {
    /// The first page, of `size` items.
    pub fn first(size: PageSize) -> Self {
        Self { size, after: None }
    }

    /// The page after `cursor`, of the same size.
    pub fn after(&self, cursor: Cursor) -> Self {
        Self {
            size: self.size,
            after: Some(cursor),
        }
    }

    /// Decodes the cursor, if any, for the list named `list`.
    pub fn after_key<K: std::str::FromStr>(
        &self,
        list: &str,
    ) -> Result<Option<K>, ValidationError> {
        self.after.as_ref().map(|c| c.decode(list)).transpose()
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    /// The items, in list order.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

impl<T> Page<T> {
    /// Builds a page from up to `size + 1` items read in list order: the
    /// extra item, if present, only proves that another page follows.
    /// `cursor` makes the cursor of an item. For store implementations.
    pub fn from_overfetch(
        mut items: Vec<T>,
        size: PageSize,
        cursor: impl Fn(&T) -> Cursor,
    ) -> Self {
        let next = if items.len() > size.get() {
            items.truncate(size.get());
            items.last().map(cursor)
        } else {
            None
        };
        Self { items, next }
    }

    /// Converts the items, keeping the cursor.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_bounds() {
        assert_eq!(PageSize::default().get(), 50);
        assert_eq!(PageSize::new(1).unwrap().get(), 1);
        assert_eq!(PageSize::new(1000).unwrap(), PageSize::MAX);
        for bad in [0, 1001, 70_000] {
            let err = PageSize::new(bad).unwrap_err();
            assert_eq!(err, ValidationError::PageSize { size: bad });
            assert_eq!(
                err.to_string(),
                format!("page size must be between 1 and 1000, got {bad}")
            );
        }
    }

    #[test]
    fn cursor_round_trip_and_list_binding() {
        let cursor = Cursor::encode("audit", 42u64);
        assert_eq!(cursor.decode::<u64>("audit").unwrap(), 42);
        assert_eq!(
            cursor.decode::<u64>("tenants"),
            Err(ValidationError::Cursor)
        );
        for junk in ["", "%%%", "bm9wZQ"] {
            assert_eq!(
                Cursor::new(junk).decode::<u64>("audit"),
                Err(ValidationError::Cursor)
            );
        }
        assert_eq!(
            ValidationError::Cursor.to_string(),
            "invalid pagination cursor"
        );
    }

    #[test]
    fn overfetch_yields_cursor_only_when_more_follow() {
        let size = PageSize::new(2).unwrap();
        let page = Page::from_overfetch(vec![1, 2, 3], size, |n| Cursor::encode("n", n));
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(page.next.unwrap().decode::<i32>("n").unwrap(), 2);
        let last = Page::from_overfetch(vec![1, 2], size, |n| Cursor::encode("n", n));
        assert_eq!(last.next, None);
    }
}
