//! `$(VAR)` references in a container's environment values, command,
//! arguments and `subPathExpr`, expanded as upstream's kubelet does:
//! `$$` is a literal `$`, and a reference to an unknown variable, or one
//! never closed, stays as written.

/// `input` with each `$(NAME)` that `lookup` knows replaced by its value.
pub fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        match after.chars().next() {
            // A lone `$` at the end.
            None => {
                out.push('$');
                rest = after;
            }
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after.find(')') {
                Some(close) => {
                    let name = &after[1..close];
                    match lookup(name) {
                        Some(value) => out.push_str(value),
                        None => out.push_str(&rest[at..at + close + 2]),
                    }
                    rest = &after[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            Some(c) => {
                out.push('$');
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `input` expanded, or the names it refers to that `lookup` has no
/// (or an empty) value for: a `subPathExpr` must name known variables.
pub fn expand_all<'a>(
    input: &str,
    lookup: impl Fn(&str) -> Option<&'a str>,
) -> Result<String, String> {
    let missing = std::cell::RefCell::new(Vec::new());
    let expanded = expand(input, |name| {
        let value = lookup(name).filter(|v| !v.is_empty());
        if value.is_none() {
            missing.borrow_mut().push(name.to_owned());
        }
        value
    });
    let mut missing = missing.into_inner();
    if missing.is_empty() {
        return Ok(expanded);
    }
    missing.sort();
    missing.dedup();
    Err(format!("missing value for {}", missing.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<&'static str> {
        match name {
            "POD" => Some("web-0"),
            "EMPTY" => Some(""),
            "N" => Some("$(POD)"),
            _ => None,
        }
    }

    #[test]
    fn references_escapes_and_leftovers_as_upstream() {
        let cases = [
            ("--name=$(POD)", "--name=web-0"),
            ("$(POD)/$(POD)", "web-0/web-0"),
            ("$(UNKNOWN) stays", "$(UNKNOWN) stays"),
            ("$$(POD) is escaped", "$(POD) is escaped"),
            ("$$$(POD)", "$web-0"),
            ("cost: 5$", "cost: 5$"),
            ("$HOME and ${HOME}", "$HOME and ${HOME}"),
            ("open $(POD", "open $(POD"),
            ("$(EMPTY)x", "x"),
            // A value is not expanded again.
            ("$(N)", "$(POD)"),
            ("€$(POD)€", "€web-0€"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, vars), want, "{input}");
        }
    }

    #[test]
    fn a_sub_path_must_name_known_values() {
        assert_eq!(expand_all("data/$(POD)", vars).unwrap(), "data/web-0");
        assert_eq!(
            expand_all("$(B)/$(EMPTY)/$(A)/$(B)", vars).unwrap_err(),
            "missing value for A, B, EMPTY"
        );
    }
}
