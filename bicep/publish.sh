#!/usr/bin/env sh
# Publish the gateway's code to its Flex Consumption app, retrying while the app's new role assignments
# propagate (right after a first deployment the upload to the deployment container can get 403 for
# a few minutes). Usage, from the repository root:
#   bicep/publish.sh <function app name> [attempts (6)] [seconds between attempts (60)]
set -u
app="${1:?usage: bicep/publish.sh <function app name> [attempts] [seconds between attempts]}"
attempts="${2:-6}"
wait="${3:-60}"
attempt=1
while :; do
  if func azure functionapp publish "$app" --python; then
    echo "published to $app (attempt $attempt)"
    exit 0
  fi
  if [ "$attempt" -ge "$attempts" ]; then
    echo "publish to $app failed $attempts times: not role propagation any more; read the output above" >&2
    exit 1
  fi
  echo "publish failed (attempt $attempt of $attempts): role assignments may still be propagating; retrying in $wait s" >&2
  sleep "$wait"
  attempt=$((attempt + 1))
done
