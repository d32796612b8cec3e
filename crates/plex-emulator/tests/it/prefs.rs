//! Prefs contract: every id of the real dump is served with its type and default; `PUT /:/prefs`
//! is all-or-nothing; values persist to Preferences.xml (non-defaults only) across restarts.

use crate::harness::*;

/// Prefs the first run sets per server, as pms-docker's `40-plex-first-run` does.
const IDENTITY: &[&str] = &[
    "MachineIdentifier",
    "ProcessedMachineIdentifier",
    "AnonymousMachineIdentifier",
    "TranscoderTempDirectory",
    "OldestPreviousVersion",
    "AcceptedEULA",
];

const REAL: &str = include_str!("../../data/real-pms-prefs.json");

#[test]
fn every_real_pref_is_served_with_its_type_and_default() {
    let e = Emu::start(&[]);
    let served = e.get("/:/prefs");
    let served = served["MediaContainer"]["Setting"].as_array().unwrap();
    let real: serde_json::Value = serde_json::from_str(REAL).unwrap();
    let real = real["MediaContainer"]["Setting"].as_array().unwrap();
    assert_eq!(real.len(), 155);
    for r in real {
        let s = served
            .iter()
            .find(|s| s["id"] == r["id"])
            .unwrap_or_else(|| panic!("{} not served", r["id"]));
        assert_eq!(s["type"], r["type"], "type of {}", r["id"]);
        assert_eq!(s["default"], r["default"], "default of {}", r["id"]);
        // A fresh server holds defaults, not the dump's own values (identity is per server).
        if !IDENTITY.contains(&r["id"].as_str().unwrap()) {
            assert_eq!(s["value"], r["default"], "value of {}", r["id"]);
        }
    }
    for (id, default) in [
        ("GenerateCreditsMarkerBehavior", "asap"),
        ("GenerateAdMarkerBehavior", "scheduled"),
        ("GenerateVADBehavior", "scheduled"),
    ] {
        let s = served
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(s["default"], default);
    }
    let one = e.get("/:/prefs/get?id=autoEmptyTrash");
    assert_eq!(one["MediaContainer"]["Setting"][0]["value"], true);
    assert_eq!(e.req("GET", "/:/prefs/get?id=NoSuchPref", true).status, 404);
}

#[test]
fn put_prefs_is_all_or_nothing_and_persists() {
    let mut e = Emu::start(&[]);
    let before = e.prefs_xml();
    let r = e.req("PUT", "/:/prefs?autoEmptyTrash=0&NoSuchPref=1", true);
    assert_eq!(r.status, 400);
    let r = e.req(
        "PUT",
        "/:/prefs?autoEmptyTrash=0&MusicAnalysisBehavior=sometimes",
        true,
    );
    assert_eq!(r.status, 400);
    let r = e.req(
        "PUT",
        "/:/prefs?autoEmptyTrash=0&ButlerStartHour=noon",
        true,
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        e.get("/:/prefs/get?id=autoEmptyTrash")["MediaContainer"]["Setting"][0]["value"],
        true
    );
    assert_eq!(
        e.prefs_xml(),
        before,
        "a rejected PUT must not touch Preferences.xml"
    );
    e.set_prefs("autoEmptyTrash=false&MusicAnalysisBehavior=asap&ButlerStartHour=7");
    assert_eq!(
        e.get("/:/prefs/get?id=autoEmptyTrash")["MediaContainer"]["Setting"][0]["value"],
        false
    );
    assert_eq!(
        e.get("/:/prefs/get?id=ButlerStartHour")["MediaContainer"]["Setting"][0]["value"],
        7
    );
    let xml = e.prefs_xml();
    assert_eq!(xml_attr(&xml, "autoEmptyTrash").as_deref(), Some("0"));
    assert_eq!(
        xml_attr(&xml, "MusicAnalysisBehavior").as_deref(),
        Some("asap")
    );
    assert!(
        xml_attr(&xml, "LoudnessAnalysisBehavior").is_none(),
        "defaults are not stored"
    );
    // Back to the default: the attribute goes away.
    e.set_prefs("ButlerStartHour=2");
    assert!(xml_attr(&e.prefs_xml(), "ButlerStartHour").is_none());
    assert!(e.stop().success());
    let e2 = Emu::start_in(&e.data, &[]);
    assert_eq!(
        e2.get("/:/prefs/get?id=MusicAnalysisBehavior")["MediaContainer"]["Setting"][0]["value"],
        "asap"
    );
}
