//! `GET /usage` and `GET /usage/export`.
//!
//! Query parameters, shared by both:
//! - `meter`: a meter, or several comma-separated (default: every meter);
//! - `period`: `current` (default) or `previous` billing period of the
//!   tenant (its plan's billing cycle; the calendar month without a plan),
//!   or `from` and `to` (RFC 3339) for another range;
//! - `granularity`: `minute`, `hour` or `day` (default `day`); windows are
//!   counted when they start inside the range, and a billing period's
//!   first window is the one holding its start: with a cycle anchored
//!   inside a day, `day` counts that whole first day, `hour` or `minute`
//!   is exact to the window;
//! - `group_by`: kept dimensions, comma-separated.
//!
//! This replica's buffered usage is flushed first, so a tenant sees its own
//! requests at once (other replicas' within their flush interval).

use bytes::Bytes;
use serde_json::json;
use tenancy_http::http::{HeaderValue, Response, StatusCode, header};
use tenancy_http::{Access, ApiRequest, Problem, RequestContext, Route, Tenancy, route};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{MeteringModule, USAGE_READ};
use crate::meter::{Aggregation, DimensionName};
use crate::metering::UsageError;
use crate::period::{Cycle, Period};
use crate::rollup::Granularity;
use crate::usage::{UsagePoint, UsageQuery, write_csv, write_jsonl};

pub(super) fn routes() -> Vec<Route> {
    vec![
        route!(GET "/usage", Access::Permission(USAGE_READ), usage),
        route!(GET "/usage/export", Access::Permission(USAGE_READ), export),
    ]
}

struct Asked {
    period: Period,
    /// The first window asked: the period's start, floored to the
    /// granularity for a billing period.
    from: OffsetDateTime,
    granularity: Granularity,
    meters: Vec<String>,
    group_by: Vec<DimensionName>,
}

fn module(t: &Tenancy) -> Result<&MeteringModule, Problem> {
    t.module::<MeteringModule>().ok_or_else(|| {
        Problem::internal(&Problem::bad_request(
            "the metering module is not registered",
        ))
    })
}

fn context(c: Option<&RequestContext>) -> Result<&RequestContext, Problem> {
    c.ok_or_else(|| Problem::internal(&Problem::bad_request("route ran without its context")))
}

fn instant(r: &ApiRequest, name: &str) -> Result<Option<OffsetDateTime>, Problem> {
    r.query(name)
        .map(|v| {
            OffsetDateTime::parse(&v, &Rfc3339)
                .map_err(|_| Problem::invalid(name, "expected an RFC 3339 date-time"))
        })
        .transpose()
}

fn list(value: Option<String>) -> Vec<String> {
    value
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

async fn asked(m: &MeteringModule, r: &ApiRequest, c: &RequestContext) -> Result<Asked, Problem> {
    let now = m.shared.clock.now();
    let granularity = match r.query("granularity") {
        None => Granularity::Day,
        Some(g) => Granularity::parse(&g)
            .ok_or_else(|| Problem::invalid("granularity", "expected minute, hour or day"))?,
    };
    let (period, from) = match (instant(r, "from")?, instant(r, "to")?) {
        (Some(start), Some(end)) => (Period { start, end }, start),
        (None, None) => {
            let cycle = match &m.shared.plans {
                Some(plans) => plans
                    .plan(c.tenant_id(), now)
                    .await
                    .map_err(|e| Problem::unavailable(&e))?
                    .map_or(Cycle::CalendarMonth, |p| p.billing_cycle),
                None => Cycle::CalendarMonth,
            };
            let current = cycle.period_at(now);
            let period = match r.query("period").as_deref() {
                None | Some("current") => current,
                Some("previous") => cycle.period_at(current.start - time::Duration::MICROSECOND),
                Some(_) => return Err(Problem::invalid("period", "expected current or previous")),
            };
            (period, granularity.floor(period.start))
        }
        _ => {
            return Err(Problem::invalid(
                "from",
                "give both from and to, or neither",
            ));
        }
    };
    let mut meters = list(r.query("meter"));
    // Each meter is asked once, and only a meter that exists is asked.
    let mut seen = std::collections::HashSet::new();
    meters.retain(|name| seen.insert(name.clone()));
    if let Some(unknown) = meters.iter().find(|name| {
        !m.metering()
            .meters()
            .iter()
            .any(|meter| meter.name().as_str() == name.as_str())
    }) {
        let unknown: String = unknown.chars().take(64).collect();
        return Err(Problem::invalid(
            "meter",
            format!("unknown meter {unknown}"),
        ));
    }
    if meters.is_empty() {
        meters = m
            .metering()
            .meters()
            .iter()
            .map(|meter| meter.name().as_str().to_owned())
            .collect();
    }
    let group_by = list(r.query("group_by"))
        .iter()
        .map(|d| DimensionName::new(d).map_err(|e| Problem::invalid("group_by", e.to_string())))
        .collect::<Result<_, _>>()?;
    Ok(Asked {
        period,
        from,
        granularity,
        meters,
        group_by,
    })
}

fn usage_problem(error: &UsageError) -> Problem {
    match error {
        UsageError::UnknownMeter(name) => {
            Problem::invalid("meter", format!("unknown meter {name}"))
        }
        UsageError::Invalid(e) => Problem::invalid("query", e.to_string()),
        UsageError::Store(e) => Problem::unavailable(e),
    }
}

/// Each asked meter's query and points.
async fn answer(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<(Asked, Vec<(UsageQuery, Vec<UsagePoint>)>), Problem> {
    let c = context(c)?;
    let m = module(t)?;
    let asked = asked(m, r, c).await?;
    m.flush().await;
    let mut answers = Vec::with_capacity(asked.meters.len());
    for meter in &asked.meters {
        let answer = m
            .metering()
            .usage(
                c.scope(),
                meter,
                asked.from,
                asked.period.end,
                asked.granularity,
                asked.group_by.clone(),
            )
            .await
            .map_err(|e| usage_problem(&e))?;
        answers.push(answer);
    }
    Ok((asked, answers))
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// The tenant's usage of each asked meter: its points and, for `sum` and
/// `count` meters, the period's total.
async fn usage(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let (asked, answers) = answer(t, r, c).await?;
    let meters: Vec<_> = answers
        .iter()
        .map(|(query, points)| {
            let meter = query.meter();
            let total = matches!(meter.aggregation(), Aggregation::Sum | Aggregation::Count)
                .then(|| points.iter().map(|p| p.value).sum::<i64>());
            json!({
                "meter": meter.name().as_str(),
                "unit": meter.unit(),
                "aggregation": meter.aggregation().as_str(),
                "total": total,
                "points": points,
            })
        })
        .collect();
    tenancy_http::json(
        StatusCode::OK,
        &json!({
            "period": { "start": rfc3339(asked.period.start), "end": rfc3339(asked.period.end) },
            "granularity": asked.granularity.as_str(),
            "meters": meters,
        }),
    )
}

/// The same usage as CSV (one header, then every meter's rows) or JSON
/// lines (`format=jsonl`, the default).
async fn export(
    t: &Tenancy,
    r: &ApiRequest,
    c: Option<&RequestContext>,
) -> Result<Response<Bytes>, Problem> {
    let csv = match r.query("format").as_deref() {
        None | Some("jsonl") => false,
        Some("csv") => true,
        Some(_) => return Err(Problem::invalid("format", "expected jsonl or csv")),
    };
    let (_, answers) = answer(t, r, c).await?;
    let mut out = Vec::new();
    for (i, (query, points)) in answers.iter().enumerate() {
        let mut part = Vec::new();
        let written = if csv {
            write_csv(query, points, &mut part)
        } else {
            write_jsonl(query, points, &mut part)
        };
        written.map_err(|e| Problem::internal(&e))?;
        let skip = if csv && i > 0 {
            // The same header again: keep the first only.
            part.iter().position(|b| *b == b'\n').map_or(0, |n| n + 1)
        } else {
            0
        };
        out.extend_from_slice(&part[skip..]);
    }
    let media = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/jsonl"
    };
    let mut response = Response::new(Bytes::from(out));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    Ok(response)
}
