//! Pages of a host's own lists, asked for and answered as the SDK's lists
//! are: `?limit=&cursor=` in, `{"items": [...], "next_cursor": ...}` out.

use serde::Serialize;
use serde_json::{Value, json};
use tenancy_core::{Cursor, Page, PageRequest, PageSize};

use crate::problem::Problem;

/// The page a query string asks for: `limit` (1 to 1000, 50 when absent)
/// and `cursor` (the `next_cursor` of the page before). `query` is the
/// part of the target after `?`, still encoded. A `limit` that is not a
/// number in range answers `422` naming the field; a cursor is checked by
/// the list it is given to ([`Cursor::decode`]).
///
/// ```
/// use tenancy_http::page_request;
///
/// let page = page_request(Some("limit=2&cursor=abc")).unwrap();
/// assert_eq!(page.size.get(), 2);
/// assert_eq!(page.after.unwrap().as_str(), "abc");
/// assert_eq!(page_request(None).unwrap().size.get(), 50);
/// assert_eq!(page_request(Some("limit=0")).unwrap_err().status().as_u16(), 422);
/// ```
pub fn page_request(query: Option<&str>) -> Result<PageRequest, Problem> {
    let find = |name: &str| {
        query.and_then(|query| {
            form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned())
        })
    };
    let size = match find("limit") {
        Some(text) => text
            .parse::<usize>()
            .map_err(|e| e.to_string())
            .and_then(|n| PageSize::new(n).map_err(|e| e.to_string()))
            .map_err(|detail| Problem::invalid("limit", detail))?,
        None => PageSize::default(),
    };
    Ok(PageRequest {
        size,
        after: find("cursor").map(Cursor::new),
    })
}

/// A page as the SDK's lists answer it: `items`, and `next_cursor` (null
/// on the last page).
pub fn page_json<T: Serialize>(page: &Page<T>) -> Value {
    json!({ "items": page.items, "next_cursor": page.next.as_ref().map(Cursor::as_str) })
}
