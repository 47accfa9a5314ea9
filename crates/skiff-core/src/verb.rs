//! The authorization verb of a request that names no collection — one
//! proxied to a node or made to a node agent's own endpoint — from its
//! HTTP method, as upstream maps it.

pub fn of_method(method: &str) -> &'static str {
    match method {
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "get",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn methods_map_as_upstream() {
        assert_eq!(super::of_method("POST"), "create");
        assert_eq!(super::of_method("GET"), "get");
    }
}
