# Sourced by the profiling scripts: checks their tools, copies the peer benchmark's harness
# (../shared/bench-peers, never written) to $peers with fresh keys, and builds the release
# binary unless SKIP_BUILD is set. Expects: project, peers, and TOOLS ("tool..." and the
# apt-get line that installs them, separated by "|"). PORT (default 18446) moves the copy's
# flowgate listener, UPSTREAM_PORT (default 18080) its upstream and ADMIN_PORT (default 19901)
# its admin listener, so two profiles can run side by side. The copy accepts the harness's
# ten-year tokens (flowgate's max_token_lifetime is 24 h by default).
for tool in ${TOOLS%%|*}; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y ${TOOLS#*|}" >&2; exit 2; }
done
mkdir -p "$peers"
cp -r "$project/../shared/bench-peers/." "$peers/"
chmod u+w -R "$peers"; chmod 600 "$peers/conf/bench-secrets.toml"
(cd "$peers" && ./gen_keys.sh >/dev/null 2>&1)
PORT=${PORT:-18446}; UPSTREAM_PORT=${UPSTREAM_PORT:-18080}; ADMIN_PORT=${ADMIN_PORT:-19901}
sed -i -e "s/127.0.0.1:18446/127.0.0.1:$PORT/" -e "s/127.0.0.1:18080/127.0.0.1:$UPSTREAM_PORT/" \
  -e "s/127.0.0.1:19901/127.0.0.1:$ADMIN_PORT/" \
  -e 's/^algorithms = \["RS256"\]$/algorithms = ["RS256"]\nmax_token_lifetime = "3650days"/' "$peers/conf/flowgate.toml"
sed -i -e "s/127.0.0.1:18080/127.0.0.1:$UPSTREAM_PORT/" -e "s#@PEERS_DIR@#$peers#g" "$peers/conf/upstream-nginx.conf"
grep -q max_token_lifetime "$peers/conf/flowgate.toml" || { echo "could not set max_token_lifetime in $peers" >&2; exit 2; }
mkdir -p /tmp/peers/run /tmp/peers/logs "$peers/run" "$peers/logs"
[ -n "${SKIP_BUILD:-}" ] || (cd "$project" && cargo build --release --quiet)
