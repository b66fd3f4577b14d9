//! `log.level`: a tracing filter, checked more strictly than the filter parser does.
//!
//! `EnvFilter` takes a lone word it does not know as a target name, so `verbose` or `warning`
//! would silently log at the wrong level. Herald refuses them instead.

/// Level names, and the numbers the filter parser also takes for them.
const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace", "0", "1", "2", "3", "4", "5"];

/// Checks a filter such as `info`, `herald=debug,info` or `warn,herald::store=trace`; the error
/// says what is wrong in words a user can act on.
pub fn check(filter: &str) -> Result<(), String> {
    let directives: Vec<&str> = filter.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    if directives.is_empty() {
        return Err("must name a level: off, error, warn, info, debug or trace".into());
    }
    for directive in directives {
        let level = match directive.rsplit_once('=') {
            // `target[span{field=value}]` with no level of its own: left to the filter parser.
            Some((_, level)) if level.contains(['}', ']']) => continue,
            Some((target, level)) if target.trim().is_empty() => {
                return Err(format!(
                    "{directive:?} names no module before '=' (write module=level, e.g. herald={level})"
                ));
            }
            Some((_, level)) => level,
            None if directive.contains('[') => continue,
            None => directive,
        };
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level.trim())) {
            return Err(format!(
                "{level:?} is not a level: use off, error, warn, info, debug or trace, or module=level such as herald=debug"
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter).map(|_| ()).map_err(|e| format!("is not a valid filter: {e}"))
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn levels_and_module_levels_pass() {
        for ok in ["info", "DEBUG", "herald=debug,info", "warn,herald::store=trace", "herald=5", "herald[conn]=debug"] {
            assert!(check(ok).is_ok(), "{ok}: {:?}", check(ok));
        }
    }

    #[test]
    fn unknown_words_are_refused() {
        for bad in ["verbose", "warning", "herald=loud", "", " , ", "=debug"] {
            assert!(check(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(check("verbose").unwrap_err().contains("herald=debug"));
    }
}
