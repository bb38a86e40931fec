//! The store suite: what every backend's claims, leases and transitions do.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;
use time::Duration;

use super::{Fixture, NOW};
use crate::model::{Run, RunStatus, StepStatus};
use crate::store::ProvisioningStoreError;

fn run_at(offset: Duration) -> Run {
    Run::new(
        "signup",
        json!({ "slug": "acme" }),
        ["a".to_owned(), "b".to_owned()],
        NOW + offset,
        NOW + offset + Duration::hours(1),
    )
}

/// A run reads back as stored; ids are unique; unknown ids are not found.
pub async fn store_round_trip(f: Fixture) {
    let run = run_at(Duration::ZERO);
    f.store.insert_run(&run).await.unwrap();
    assert_eq!(f.store.get_run(run.id).await.unwrap(), run);
    assert!(matches!(
        f.store.insert_run(&run).await,
        Err(ProvisioningStoreError::Duplicate)
    ));
    assert!(matches!(
        f.store.get_run(crate::RunId::new()).await,
        Err(ProvisioningStoreError::NotFound)
    ));
}

/// A claimed run is not claimed again until its lease lapses; then the
/// old leaseholder can neither renew nor write, and a save writes every
/// field the runner owns.
pub async fn claims_are_exclusive_and_leases_lapse(f: Fixture) {
    let run = run_at(Duration::ZERO);
    f.store.insert_run(&run).await.unwrap();
    let until = NOW + Duration::seconds(30);
    let (claimed, first) = f.store.claim(NOW, until).await.unwrap().unwrap();
    assert_eq!(claimed.id, run.id);
    assert!(f.store.claim(NOW, until).await.unwrap().is_none());
    assert_eq!(
        f.store
            .renew(&first, NOW + Duration::seconds(40))
            .await
            .unwrap(),
        RunStatus::Pending
    );
    // Renewed to 40 s: still held at 35 s.
    let later = NOW + Duration::seconds(35);
    assert!(
        f.store
            .claim(later, later + Duration::seconds(30))
            .await
            .unwrap()
            .is_none()
    );

    let mut saved = claimed.clone();
    saved.status = RunStatus::Running;
    saved.state.insert("tenant_id".into(), json!("t-1"));
    saved.steps[0].status = StepStatus::Succeeded;
    saved.steps[0].attempts = 2;
    saved.steps[0].started_at = Some(NOW);
    saved.steps[0].finished_at = Some(NOW + Duration::seconds(1));
    saved.steps[1].last_error = Some("boom".into());
    saved.updated_at = NOW + Duration::seconds(1);
    f.store.save(&first, &saved, true).await.unwrap();
    assert_eq!(f.store.get_run(run.id).await.unwrap(), saved);

    // Released: claimable again at once.
    let (_, second) = f
        .store
        .claim(later, later + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    // The second lease lapses and a third worker takes the run.
    let lapsed = later + Duration::seconds(31);
    let (_, third) = f
        .store
        .claim(lapsed, lapsed + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(second.token, third.token);
    assert!(matches!(
        f.store.renew(&second, lapsed + Duration::seconds(60)).await,
        Err(ProvisioningStoreError::LeaseLost)
    ));
    let mut stale = saved.clone();
    stale.status = RunStatus::Succeeded;
    assert!(matches!(
        f.store.save(&second, &stale, true).await,
        Err(ProvisioningStoreError::LeaseLost)
    ));
    assert_eq!(
        f.store.get_run(run.id).await.unwrap().status,
        RunStatus::Running
    );
    f.store.save(&third, &stale, true).await.unwrap();
    assert_eq!(
        f.store.get_run(run.id).await.unwrap().status,
        RunStatus::Succeeded
    );
    // Finished runs are never claimed.
    let much_later = NOW + Duration::days(1);
    assert!(
        f.store
            .claim(much_later, much_later)
            .await
            .unwrap()
            .is_none()
    );
}

/// A run waiting for its next attempt is not claimed early, unless its
/// deadline passed or it is being cancelled.
pub async fn claims_respect_backoff_and_deadline(f: Fixture) {
    let run = run_at(Duration::ZERO);
    f.store.insert_run(&run).await.unwrap();
    let (mut claimed, lease) = f
        .store
        .claim(NOW, NOW + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    claimed.not_before = NOW + Duration::minutes(5);
    f.store.save(&lease, &claimed, true).await.unwrap();
    let at = NOW + Duration::minutes(1);
    assert!(
        f.store
            .claim(at, at + Duration::seconds(30))
            .await
            .unwrap()
            .is_none()
    );
    let at = NOW + Duration::minutes(5);
    let (mut again, lease) = f
        .store
        .claim(at, at + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    again.status = RunStatus::Succeeded;
    f.store.save(&lease, &again, true).await.unwrap();

    // Backing off past its deadline: claimed once the deadline passed, so
    // it can be cancelled.
    let other = run_at(Duration::ZERO);
    f.store.insert_run(&other).await.unwrap();
    let (mut claimed, lease) = f.store.claim(at, at).await.unwrap().unwrap();
    assert_eq!(claimed.id, other.id);
    claimed.not_before = NOW + Duration::hours(5);
    f.store.save(&lease, &claimed, true).await.unwrap();
    let before = NOW + Duration::minutes(30);
    assert!(f.store.claim(before, before).await.unwrap().is_none());
    let past = NOW + Duration::hours(2);
    let (r, _) = f
        .store
        .claim(past, past + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.id, other.id);
}

/// Cancel and retry apply only where they make sense, and a cancel that
/// comes in while a worker holds the run survives the worker's save.
pub async fn cancel_and_retry_transitions(f: Fixture) {
    let run = run_at(Duration::ZERO);
    f.store.insert_run(&run).await.unwrap();
    let (mut claimed, lease) = f
        .store
        .claim(NOW, NOW + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        f.store.retry(run.id, NOW, NOW).await,
        Err(ProvisioningStoreError::InvalidTransition {
            status: RunStatus::Pending,
            ..
        })
    ));
    let cancelled = f
        .store
        .request_cancel(run.id, NOW, "operator")
        .await
        .unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelling);
    assert_eq!(cancelled.last_error.as_deref(), Some("operator"));
    assert_eq!(
        f.store
            .renew(&lease, NOW + Duration::seconds(30))
            .await
            .unwrap(),
        RunStatus::Cancelling
    );
    // The worker did not see it yet and saves `running`: cancelling stays.
    claimed.status = RunStatus::Running;
    f.store.save(&lease, &claimed, false).await.unwrap();
    assert_eq!(
        f.store.get_run(run.id).await.unwrap().status,
        RunStatus::Cancelling
    );
    // Asking again changes nothing.
    assert_eq!(
        f.store
            .request_cancel(run.id, NOW, "again")
            .await
            .unwrap()
            .last_error
            .as_deref(),
        Some("operator")
    );
    claimed.status = RunStatus::Cancelled;
    f.store.save(&lease, &claimed, true).await.unwrap();

    // A failed run is retried: its failed and cancelled steps start over.
    let failed = run_at(Duration::ZERO);
    f.store.insert_run(&failed).await.unwrap();
    let (mut claimed, lease) = loop {
        let (r, l) = f
            .store
            .claim(NOW, NOW + Duration::seconds(30))
            .await
            .unwrap()
            .unwrap();
        if r.id == failed.id {
            break (r, l);
        }
    };
    claimed.status = RunStatus::Failed;
    claimed.steps[0].status = StepStatus::Cancelled;
    claimed.steps[0].attempts = 1;
    claimed.steps[1].status = StepStatus::Failed;
    claimed.steps[1].attempts = 3;
    claimed.steps[1].last_error = Some("broken".into());
    f.store.save(&lease, &claimed, true).await.unwrap();
    let later = NOW + Duration::hours(3);
    let retried = f
        .store
        .retry(failed.id, later, later + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(retried.status, RunStatus::Pending);
    assert_eq!(retried.manual_retries, 1);
    assert_eq!(retried.not_before, later);
    assert_eq!(retried.deadline, later + Duration::hours(1));
    assert!(
        retried
            .steps
            .iter()
            .all(|s| s.status == StepStatus::Pending && s.attempts == 0)
    );
    assert_eq!(retried.steps[1].last_error.as_deref(), Some("broken"));
    assert_eq!(f.store.get_run(failed.id).await.unwrap(), retried);

    // A succeeded run can be neither cancelled nor retried.
    let done = run_at(Duration::ZERO);
    f.store.insert_run(&done).await.unwrap();
    let (mut claimed, lease) = f
        .store
        .claim(later, later + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, done.id);
    claimed.status = RunStatus::Succeeded;
    f.store.save(&lease, &claimed, true).await.unwrap();
    assert!(matches!(
        f.store.request_cancel(done.id, later, "x").await,
        Err(ProvisioningStoreError::InvalidTransition {
            status: RunStatus::Succeeded,
            ..
        })
    ));
    assert!(matches!(
        f.store
            .request_cancel(crate::RunId::new(), later, "x")
            .await,
        Err(ProvisioningStoreError::NotFound)
    ));
}

/// Listing pages through runs oldest first, filtered by status.
pub async fn runs_are_listed_by_status(f: Fixture) {
    use tenancy_core::{PageRequest, PageSize};
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut run = run_at(Duration::ZERO);
        if i == 1 || i == 3 {
            run.status = RunStatus::Failed;
        }
        f.store.insert_run(&run).await.unwrap();
        ids.push(run.id);
    }
    let page = PageRequest::first(PageSize::new(2).unwrap());
    let first = f.store.list_runs(None, &page).await.unwrap();
    assert_eq!(
        first.items.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids[..2]
    );
    assert_eq!(first.items[0].steps.len(), 2);
    let second = f
        .store
        .list_runs(None, &page.after(first.next.unwrap()))
        .await
        .unwrap();
    assert_eq!(
        second.items.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids[2..4]
    );
    let failed = f
        .store
        .list_runs(Some(RunStatus::Failed), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(
        failed.items.iter().map(|r| r.id).collect::<Vec<_>>(),
        [ids[1], ids[3]]
    );
    assert!(failed.next.is_none());
}

/// Many workers claiming at once never get the same run.
pub async fn concurrent_claims_never_share(f: Fixture) {
    let mut ids = HashSet::new();
    for _ in 0..24 {
        let run = run_at(Duration::ZERO);
        ids.insert(run.id);
        f.store.insert_run(&run).await.unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = Arc::clone(&f.store);
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some((run, _)) = store.claim(NOW, NOW + Duration::seconds(30)).await.unwrap()
            {
                got.push(run.id);
            }
            got
        }));
    }
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(task.await.unwrap());
    }
    assert_eq!(claimed.len(), ids.len(), "every run claimed exactly once");
    assert_eq!(claimed.into_iter().collect::<HashSet<_>>(), ids);
}
