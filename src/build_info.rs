//! What this binary is: version, git revision and build date, recorded by `build.rs`.

/// The crate version, e.g. `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git revision the binary was built from (12 hex digits); `unknown` outside a checkout and in
/// debug builds (see `build.rs`).
pub const GIT_REVISION: &str = env!("HERALD_GIT_REVISION");

/// The build date, `YYYY-MM-DD` (UTC; `SOURCE_DATE_EPOCH` when set).
pub const BUILD_DATE: &str = env!("HERALD_BUILD_DATE");

/// `herald --version`: `0.1.0 (rev 1a2b3c4d5e6f, built 2026-11-29)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (rev ",
    env!("HERALD_GIT_REVISION"),
    ", built ",
    env!("HERALD_BUILD_DATE"),
    ")"
);
