# Sourced by the profiling scripts: checks their tools, copies the peer benchmark's harness
# (../shared/bench-peers, never written) to $peers with fresh keys, and builds the release
# binary unless SKIP_BUILD is set. Expects: project, peers, and TOOLS ("tool..." and the
# apt-get line that installs them, separated by "|").
for tool in ${TOOLS%%|*}; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y ${TOOLS#*|}" >&2; exit 2; }
done
mkdir -p "$peers"
cp -r "$project/../shared/bench-peers/." "$peers/"
chmod u+w -R "$peers"; chmod 600 "$peers/conf/bench-secrets.toml"
(cd "$peers" && ./gen_keys.sh >/dev/null 2>&1)
mkdir -p /tmp/peers/run /tmp/peers/logs
[ -n "${SKIP_BUILD:-}" ] || (cd "$project" && cargo build --release --quiet)
