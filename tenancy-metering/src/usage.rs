//! Usage queries over the rollups, and their export as CSV or JSON lines.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use tenancy_core::TenantId;
use time::OffsetDateTime;

use crate::meter::{DimensionName, Meter};
use crate::rollup::{Aggregate, Granularity, RollupKey};

/// The most windows one query may span: a year of days, a week of hours
/// and a week of minutes all fit; anything larger is refused before it
/// reaches the store.
pub const MAX_BUCKETS: i64 = 10_080;

/// Why a usage query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// `from` is not before `to`.
    #[error("the range is empty: from must be before to")]
    EmptyRange,
    /// The range spans more than [`MAX_BUCKETS`] windows.
    #[error("the range spans {buckets} windows of a {granularity}, at most 10080 are allowed")]
    RangeTooLarge {
        /// How many windows it spans.
        buckets: i64,
        /// The granularity asked for.
        granularity: &'static str,
    },
    /// Grouping by a dimension the meter does not keep.
    #[error("meter {meter} does not keep dimension {dimension}")]
    UnknownDimension {
        /// The meter.
        meter: String,
        /// The dimension.
        dimension: DimensionName,
    },
}

/// A checked usage query: one tenant's usage of one meter, in windows of
/// one granularity starting in `[from, to)`, optionally grouped by kept
/// dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    tenant_id: TenantId,
    meter: Arc<Meter>,
    from: OffsetDateTime,
    to: OffsetDateTime,
    granularity: Granularity,
    group_by: Vec<DimensionName>,
}

impl UsageQuery {
    /// Checks the range (non-empty, at most [`MAX_BUCKETS`] windows) and
    /// that every `group_by` dimension is kept by the meter. Windows are
    /// included when they start in `[from, to)`: pass window boundaries (a
    /// billing period anchored mid-day is exact at minute granularity).
    pub fn new(
        tenant_id: TenantId,
        meter: Arc<Meter>,
        from: OffsetDateTime,
        to: OffsetDateTime,
        granularity: Granularity,
        group_by: Vec<DimensionName>,
    ) -> Result<Self, QueryError> {
        if from >= to {
            return Err(QueryError::EmptyRange);
        }
        let width = granularity.width().whole_seconds();
        let buckets = (to - from).whole_seconds() / width + 1;
        if buckets > MAX_BUCKETS {
            return Err(QueryError::RangeTooLarge {
                buckets,
                granularity: granularity.as_str(),
            });
        }
        if let Some(dimension) = group_by.iter().find(|d| !meter.dimensions().contains(*d)) {
            return Err(QueryError::UnknownDimension {
                meter: meter.name().to_string(),
                dimension: dimension.clone(),
            });
        }
        let mut group_by = group_by;
        group_by.dedup();
        Ok(Self {
            tenant_id,
            meter,
            from: tenancy_core::truncate_to_micros(from),
            to: tenancy_core::truncate_to_micros(to),
            granularity,
            group_by,
        })
    }

    /// The tenant.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }
    /// The meter.
    pub fn meter(&self) -> &Arc<Meter> {
        &self.meter
    }
    /// The first instant a window may start at.
    pub fn from(&self) -> OffsetDateTime {
        self.from
    }
    /// The instant windows start before.
    pub fn to(&self) -> OffsetDateTime {
        self.to
    }
    /// The window width.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }
    /// The dimensions to group by.
    pub fn group_by(&self) -> &[DimensionName] {
        &self.group_by
    }

    /// Whether the rollup row `key` is one this query reads.
    pub fn selects(&self, key: &RollupKey) -> bool {
        key.meter == *self.meter.name()
            && key.granularity == self.granularity
            && key.bucket >= self.from
            && key.bucket < self.to
    }

    /// The group of a row with these dimensions.
    pub fn group_of(
        &self,
        dimensions: &crate::event::Dimensions,
    ) -> BTreeMap<DimensionName, Option<String>> {
        self.group_by
            .iter()
            .map(|d| (d.clone(), dimensions.get(d).cloned()))
            .collect()
    }

    /// Folds rollup rows into points, in order of window then group: the
    /// memory store answers with this, and other stores must agree.
    pub fn fold<'a, I>(&self, rows: I) -> Vec<UsagePoint>
    where
        I: IntoIterator<Item = (&'a RollupKey, &'a Aggregate)>,
    {
        let mut groups: BTreeMap<
            (OffsetDateTime, BTreeMap<DimensionName, Option<String>>),
            Aggregate,
        > = BTreeMap::new();
        for (key, aggregate) in rows {
            if self.selects(key) {
                groups
                    .entry((key.bucket, self.group_of(&key.dimensions)))
                    .or_default()
                    .merge(aggregate);
            }
        }
        let aggregation = self.meter.aggregation();
        groups
            .into_iter()
            .map(|((bucket, group), aggregate)| UsagePoint {
                bucket,
                group,
                value: aggregate.value(aggregation),
            })
            .collect()
    }
}

/// The usage of one window and group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct UsagePoint {
    /// The window start (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub bucket: OffsetDateTime,
    /// The group's dimension values (`None` where events lacked one).
    pub group: BTreeMap<DimensionName, Option<String>>,
    /// The meter's figure for the window and group.
    pub value: i64,
}

/// Sorts points as [`UsageQuery::fold`] returns them (window, then group).
pub fn sort_points(points: &mut [UsagePoint]) {
    points.sort_by(|a, b| (a.bucket, &a.group).cmp(&(b.bucket, &b.group)));
}

/// Why an export failed to write.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The writer failed.
    #[error("could not write the export")]
    Io(#[from] std::io::Error),
    /// A row could not be encoded.
    #[error("could not encode a row of the export")]
    Encode(#[source] tenancy_core::BoxError),
}

/// Writes `points` of `query` as CSV with a header: `meter`, `unit`,
/// `granularity`, `bucket` (RFC 3339), one column per grouped dimension
/// (empty where events lacked it), `value`.
pub fn write_csv<W: std::io::Write>(
    query: &UsageQuery,
    points: &[UsagePoint],
    out: W,
) -> Result<(), ExportError> {
    let mut writer = csv::Writer::from_writer(out);
    let encode = |e: csv::Error| ExportError::Encode(Box::new(e));
    let mut header = vec!["meter", "unit", "granularity", "bucket"];
    header.extend(query.group_by.iter().map(DimensionName::as_str));
    header.push("value");
    writer.write_record(&header).map_err(encode)?;
    for point in points {
        let bucket = point
            .bucket
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| ExportError::Encode(Box::new(e)))?;
        let value = point.value.to_string();
        let mut record = vec![
            query.meter.name().as_str(),
            query.meter.unit(),
            query.granularity.as_str(),
            bucket.as_str(),
        ];
        for d in &query.group_by {
            record.push(point.group.get(d).and_then(|v| v.as_deref()).unwrap_or(""));
        }
        record.push(&value);
        writer.write_record(&record).map_err(encode)?;
    }
    writer.flush()?;
    Ok(())
}

/// Writes `points` of `query` as JSON lines: one object per point with
/// `meter`, `unit`, `granularity`, `bucket`, `group` and `value`.
pub fn write_jsonl<W: std::io::Write>(
    query: &UsageQuery,
    points: &[UsagePoint],
    mut out: W,
) -> Result<(), ExportError> {
    #[derive(Serialize)]
    struct Line<'a> {
        meter: &'a str,
        unit: &'a str,
        granularity: &'a str,
        #[serde(flatten)]
        point: &'a UsagePoint,
    }
    for point in points {
        let line = Line {
            meter: query.meter.name().as_str(),
            unit: query.meter.unit(),
            granularity: query.granularity.as_str(),
            point,
        };
        serde_json::to_writer(&mut out, &line).map_err(|e| ExportError::Encode(Box::new(e)))?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::meter::{Aggregation, MeterName};
    use time::macros::datetime;

    fn meter() -> Arc<Meter> {
        Arc::new(
            Meter::new(
                MeterName::new("calls").unwrap(),
                Aggregation::Count,
                "calls",
            )
            .unwrap()
            .keep([DimensionName::new("route").unwrap()])
            .unwrap(),
        )
    }

    #[test]
    fn queries_are_checked() {
        let t = datetime!(2030-01-01 0:00 UTC);
        let q = |from, to, g, by: Vec<&str>| {
            UsageQuery::new(
                TenantId::new(),
                meter(),
                from,
                to,
                g,
                by.into_iter()
                    .map(|d| DimensionName::new(d).unwrap())
                    .collect(),
            )
        };
        assert_eq!(
            q(t, t, Granularity::Day, vec![]),
            Err(QueryError::EmptyRange)
        );
        assert!(matches!(
            q(t, t + time::Duration::days(30), Granularity::Minute, vec![]),
            Err(QueryError::RangeTooLarge { .. })
        ));
        assert!(q(t, t + time::Duration::days(366), Granularity::Day, vec![]).is_ok());
        assert!(matches!(
            q(t, t + time::Duration::DAY, Granularity::Day, vec!["model"]),
            Err(QueryError::UnknownDimension { .. })
        ));
    }

    #[test]
    fn exports_csv_and_json_lines() {
        let t = datetime!(2030-01-01 0:00 UTC);
        let route = DimensionName::new("route").unwrap();
        let query = UsageQuery::new(
            TenantId::new(),
            meter(),
            t,
            t + time::Duration::DAY,
            Granularity::Day,
            vec![route.clone()],
        )
        .unwrap();
        let points = vec![
            UsagePoint {
                bucket: t,
                group: BTreeMap::from([(route.clone(), Some("/a,b".to_owned()))]),
                value: 3,
            },
            UsagePoint {
                bucket: t,
                group: BTreeMap::from([(route, None)]),
                value: 1,
            },
        ];
        let mut csv = Vec::new();
        write_csv(&query, &points, &mut csv).unwrap();
        assert_eq!(
            String::from_utf8(csv).unwrap(),
            "meter,unit,granularity,bucket,route,value\n\
             calls,calls,day,2030-01-01T00:00:00Z,\"/a,b\",3\n\
             calls,calls,day,2030-01-01T00:00:00Z,,1\n"
        );
        let mut jsonl = Vec::new();
        write_jsonl(&query, &points, &mut jsonl).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(jsonl)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines[0],
            serde_json::json!({"meter": "calls", "unit": "calls", "granularity": "day",
                "bucket": "2030-01-01T00:00:00Z", "group": {"route": "/a,b"}, "value": 3})
        );
        assert_eq!(lines[1]["group"]["route"], serde_json::Value::Null);
    }
}
