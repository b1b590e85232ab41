# Varnish between nginx and an app run by Baton: client -> nginx -> Varnish -> baton.
#
# Baton keeps the app's socket open across restarts and never puts a release
# that fails to boot in front of Varnish, so the probe below stays healthy
# through deploys. The probe and grace are for what Baton cannot hide: the app
# being down altogether (stopped, or every release crashing). Then Varnish
# marks the backend sick and keeps serving what it has cached, stale, for up
# to the grace below instead of answering 503.
#
# ClassicStackTests (Tests/ClassicStackTests/Varnish.swift) compile this file
# with `varnishd -C -f` and run it in the chain, rewriting only the address
# marked below.
vcl 4.1;

import std;

probe app_health {
    # baton-testapp and examples/psgi answer "ok" here; use a cheap page of your app.
    .url = "/health";
    .expected_response = 200;
    .timeout = 2s;
    .interval = 2s;
    # Healthy when 3 of the last 5 probes succeeded.
    .window = 5;
    .threshold = 3;
    .initial = 3;
}

backend app {
    # baton run --listen 127.0.0.1:8080 (the address marked for the tests). For
    # a unix socket (Varnish 6+), replace both lines by:
    #   .path = "/run/myapp/app.sock";
    .host = "127.0.0.1";
    .port = "8080";
    .probe = app_health;
    .connect_timeout = 5s;
    .first_byte_timeout = 60s;
    .between_bytes_timeout = 30s;
}

sub vcl_recv {
    set req.backend_hint = app;
    if (std.healthy(req.backend_hint)) {
        # A healthy app: serve stale objects only briefly while one fetch refreshes them.
        set req.grace = 10s;
    } else {
        # The app is down: anything still in the cache is better than a 503.
        set req.grace = 6h;
    }
}

sub vcl_backend_response {
    # How long an object may be kept past its TTL (req.grace picks how much of it to use).
    set beresp.grace = 6h;
}
