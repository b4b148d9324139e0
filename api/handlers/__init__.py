"""One module per resource; each handler takes (ctx, req, **path_vars) and returns
(status, body)."""
