//! Change detection: unchanged secrets are not fetched again, shared sources are fetched once.

use std::time::Duration;

use lockstep_rig::{Emulator, Rig};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn rotation_fetches_only_what_changed_and_shares_fetches() -> anyhow::Result<()> {
    let emu = Emulator::start(&Rig::get().dir.join(format!("emu-{}", lockstep_rig::unique())))?;
    let aws = emu.client();
    for (name, value) in [("rot/a", "a1"), ("rot/b", "b1"), ("rot/c", "c1")] {
        aws.create_secret().name(name).secret_string(value).send().await?;
    }
    let w = World::new("rotation").await?;
    w.store("aws", &emu.endpoint, json!({})).await?;
    // one and three share rot/a; two reads rot/b; four reads rot/c.
    for (es, key) in [("one", "rot/a"), ("two", "rot/b"), ("three", "rot/a"), ("four", "rot/c")] {
        w.external_secret(
            es,
            json!({"secretStoreRef": {"name": "aws"}, "refreshInterval": "1s",
            "data": [{"secretKey": "k", "remoteRef": {"key": key}}]}),
        )
        .await?;
    }
    for (es, v) in [("one", "a1"), ("two", "b1"), ("three", "a1"), ("four", "c1")] {
        w.wait_value(es, "k", v).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Steady state: several refreshes, no value fetched.
    emu.start_recording()?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let steady = emu.recorded()?;
    assert_eq!(steady.get("GetSecretValue"), None, "unchanged secrets must not be fetched: {steady:?}");
    let polls = steady.get("DescribeSecret").copied().unwrap_or(0) + steady.get("ListSecrets").copied().unwrap_or(0);
    assert!(polls >= 1, "change metadata is polled: {steady:?}");

    // Rotate the shared secret: both readers follow, with one GetSecretValue.
    emu.start_recording()?;
    aws.put_secret_value().secret_id("rot/a").secret_string("a2").send().await?;
    w.wait_value("one", "k", "a2").await?;
    w.wait_value("three", "k", "a2").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = emu.stop_recording()?;
    assert_eq!(calls.get("GetSecretValue"), Some(&1), "one fetch for the shared, changed source: {calls:?}");
    Ok(())
}
