#!/bin/sh
# The hook a deploy tool runs on the server once a release is copied:
#
#     post-deploy.sh /srv/myapp/releases/20261126-1200
#
# It is one `baton deploy`: point /srv/myapp/current at the release, then a
# graceful restart of the app under baton, or a start of baton (as a daemon)
# if it is not running. It returns once the new generation has proved that it
# serves (it accepted a connection on its own socket) and kept serving through
# its probation (5 s, the old generation waiting in reserve): exit 0. If the
# release fails to boot, or dies or stops accepting during its probation,
# `current` is pointed back, the old generation serves on (new connections go
# back to it at once), and the exit code is 6, so the deploy tool reports a
# failure. A second deploy waits for the first. It returns at once over ssh,
# with or without a terminal, and the daemon outlives the ssh session.
#
# No readiness option is needed: the defaults are proof, then probation.
# Starman: --preload-app makes a release that cannot load fail at once (without
# it, its workers die while the master lives, which baton sees within seconds);
# QUIT retires the old generation gracefully (TERM would cut its requests);
# --disable-keepalive behind nginx (see examples/nginx).
#
# Calling it:
#   whiskey_disk (config/deploy.yml; the checkout is updated in place, so
#   there is no release directory: drop --release and --current below):
#       production:
#         deploy_to: /srv/myapp/current
#         post_deploy_script: bin/post-deploy.sh
#   Capistrano (config/deploy.rb):
#       namespace :deploy do
#         task :baton do
#           on roles(:app) do
#             execute "/srv/myapp/shared/post-deploy.sh", release_path
#           end
#         end
#       end
#       after "deploy:updated", "deploy:baton"   # instead of deploy:symlink:release
#   A plain ssh line (after rsync/scp of the release):
#       ssh deploy@host /srv/myapp/shared/post-deploy.sh /srv/myapp/releases/20261126-1200
#
# Under systemd (examples/systemd/myapp.service) baton is not started by this
# hook: see examples/deploy/README.md.
#
# The environment may override the names (the tests do): APP, APP_ROOT, LISTEN.
set -eu
: "${APP:=myapp}" "${APP_ROOT:=/srv/myapp}" "${LISTEN:=127.0.0.1:8080}"

exec baton deploy --name "$APP" --release "$1" --current "$APP_ROOT/current" \
    --listen "$LISTEN" --dir "$APP_ROOT/current" --signal-on-hup QUIT \
    -- starman --preload-app --workers 4 --disable-keepalive app.psgi
