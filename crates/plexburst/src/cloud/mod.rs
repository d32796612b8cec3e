//! Rented machines: the cloud providers a run can rent its target from (today Scaleway). Below the
//! plan, like `storage`: the plan holds a provider's choices as data, the pipeline's `provision`
//! and `teardown` phases execute them.

pub mod scaleway;
