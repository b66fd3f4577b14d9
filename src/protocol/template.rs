//! Name templates such as `campaign:{campaign_id}`, filled from a connection's query parameters.

/// Checks a template's braces; returns a description of the first problem.
pub fn check(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err("has a '}' without a matching '{'".into());
        }
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or("has a '{' without a matching '}'")?;
        let name = &after[..close];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("parameter {{{name}}} must be a non-empty name of letters, digits or '_'"));
        }
        rest = &after[close + 1..];
    }
    if template.is_empty() {
        return Err("is empty".into());
    }
    Ok(())
}

/// Fills a template from `lookup`; `None` when a parameter is absent or empty.
pub fn render<'a>(template: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> Option<String> {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}')?;
        let value = lookup(&after[..close]).filter(|v| !v.is_empty())?;
        out.push_str(value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_parameters() {
        let lookup = |k: &str| (k == "campaign_id").then_some("123");
        assert_eq!(render("campaign:{campaign_id}", lookup).as_deref(), Some("campaign:123"));
        assert_eq!(render("campaigns", lookup).as_deref(), Some("campaigns"));
        assert_eq!(render("demo:{demo_id}", lookup), None);
    }

    #[test]
    fn checks_braces() {
        assert!(check("campaign:{campaign_id}").is_ok());
        assert!(check("a{").is_err());
        assert!(check("a}").is_err());
        assert!(check("a{}").is_err());
        assert!(check("a{b-c}").is_err());
        assert!(check("").is_err());
    }
}
