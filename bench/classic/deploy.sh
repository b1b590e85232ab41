#!/bin/sh
# The deploy script people write around Server::Starter, as bench/run's
# "classic" side of the cold start and deploy scenario: point `current` at
# the release, then "graceful restart, else start" with start-stop-daemon.
#
# Settings come from the environment:
#   START_SERVER  the start_server to use (Perl's /usr/bin/start_server, or ours)
#   RELEASE       the release directory to deploy
#   CURRENT       the symlink the server runs from
#   PIDFILE STATUSFILE LOGFILE PORT SIGNAL
# and the app's command line is the arguments.
set -eu

# Re-point `current` atomically (a new link renamed over the old one).
ln -sfn "$RELEASE" "$CURRENT.new"
mv -Tf "$CURRENT.new" "$CURRENT"

# Graceful restart when it runs...
if start-stop-daemon --status --pidfile "$PIDFILE"; then
    exec "$START_SERVER" --restart --pid-file="$PIDFILE" --status-file="$STATUSFILE"
fi

# ...else start it in the background.
exec start-stop-daemon --start --quiet --background --pidfile "$PIDFILE" --chdir "$CURRENT" \
    --startas "$START_SERVER" -- \
    --port="127.0.0.1:$PORT" --dir="$CURRENT" --interval=1 --signal-on-hup="$SIGNAL" \
    --pid-file="$PIDFILE" --status-file="$STATUSFILE" --log-file="$LOGFILE" -- "$@"
