"""The web console: a page served at / by `lifelong serve` that drives the public /v1 API with the key a
person types. Plain HTML, CSS and JavaScript modules in `static/` (no build step, no front-end library)."""
