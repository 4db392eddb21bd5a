//! Power cuts in the tests (feature `fault-injection`): a database whose
//! fault plan tracks what each write and sync made durable, and the
//! database a restart finds after the power went off. Included with
//! `#[path]` by the tests that cut the power.

use std::path::Path;

use emdb::{Emdb, EmdbBuilder, FaultPlan, ImagePolicy};

/// `builder` built with a new plan that tracks what becomes durable.
pub fn tracked(builder: EmdbBuilder) -> (Emdb, FaultPlan) {
    let plan = FaultPlan::new();
    plan.track_durable();
    let db = builder.fault_plan(plan.clone()).build().expect("open");
    (db, plan)
}

/// `DurableOnly` (just what was made durable) or `Random` (that, and any
/// part of what may have reached the disk besides).
pub fn image_policy(durable_only: bool) -> ImagePolicy {
    if durable_only {
        ImagePolicy::DurableOnly
    } else {
        ImagePolicy::Random
    }
}

/// What a restart finds of a database after the power went off: the image of
/// its directory opened as a database (an image without the directory opens
/// as a new, empty one, as a restart would), and a description of the image
/// for messages.
pub fn reopen_image(
    plan: &FaultPlan,
    live: &Path,
    image: &Path,
    policy: ImagePolicy,
    seed: u64,
) -> (Emdb, String) {
    reopen_image_with(plan, live, image, policy, seed, Emdb::builder())
}

/// [`reopen_image`] with the settings of `builder` (a key, say).
pub fn reopen_image_with(
    plan: &FaultPlan,
    live: &Path,
    image: &Path,
    policy: ImagePolicy,
    seed: u64,
    builder: EmdbBuilder,
) -> (Emdb, String) {
    let report = plan
        .durable_image(live, image, policy, seed)
        .expect("durable image");
    let db = builder
        .path(image)
        .build()
        .unwrap_or_else(|e| panic!("the image does not open: {e:?} ({report:?})"));
    (db, format!("{policy:?} {report:?}"))
}
