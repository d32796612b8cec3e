//! The export's manifest as `plexburst apply` reads it (`apply/verify.rs`) and the archive's
//! read-back line (`<entries> <sha256>`): never a panic, a manifest read and written again reads
//! back the same, and a read-back line is only accepted with a whole sha256.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexburst::archive;
use plexburst::export::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = serde_json::from_slice::<Manifest>(data) {
        let again = serde_json::to_vec(&m).unwrap();
        let back: Manifest = serde_json::from_slice(&again).expect("a manifest written back");
        assert_eq!(format!("{m:?}"), format!("{back:?}"));
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((sha, _)) = archive::parse_read_back(text, "the archive") {
        assert!(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()));
    }
});
