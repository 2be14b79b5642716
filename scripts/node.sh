# shellcheck shell=bash
# Sourced by the scripts: puts a Node.js >= 22.15 first on PATH. The machine's own node
# is used when it is new enough; otherwise the official build of CDC_NODE_VERSION from the
# npm registry (package node-linux-<arch>: the same binary nodejs.org ships) is unpacked
# once into .state/node/<version>. Node 20 reached its end of life in April 2026, and
# zstd (Kafka compression) needs node:zlib from 22.15 on.
CDC_NODE_VERSION="${CDC_NODE_VERSION:-22.23.5}"
cdc_node_ok() {
  command -v node >/dev/null 2>&1 && node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>22||(a===22&&b>=15)?0:1)' 2>/dev/null
}
if ! cdc_node_ok; then
  cdc_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  cdc_node_dir="$cdc_root/.state/node/$CDC_NODE_VERSION"
  if [ ! -x "$cdc_node_dir/bin/node" ]; then
    case "$(uname -m)" in
      x86_64) cdc_node_arch=x64 ;;
      aarch64 | arm64) cdc_node_arch=arm64 ;;
      *) echo "node.sh: no Node.js build for $(uname -m); install Node.js >= 22.15 yourself" >&2; return 1 ;;
    esac
    echo "installing Node.js $CDC_NODE_VERSION (node-linux-$cdc_node_arch from the npm registry) into .state/node" >&2
    cdc_node_tmp="$(mktemp -d)"
    (cd "$cdc_node_tmp" && npm pack --silent "node-linux-$cdc_node_arch@$CDC_NODE_VERSION" >/dev/null && tar xzf ./*.tgz) || {
      rm -rf "$cdc_node_tmp"
      echo "node.sh: could not fetch node-linux-$cdc_node_arch@$CDC_NODE_VERSION from the npm registry" >&2
      return 1
    }
    mkdir -p "$cdc_node_dir"
    cp -a "$cdc_node_tmp/package/." "$cdc_node_dir/"
    rm -rf "$cdc_node_tmp"
  fi
  export PATH="$cdc_node_dir/bin:$PATH"
  unset cdc_root cdc_node_dir cdc_node_arch cdc_node_tmp
fi
unset -f cdc_node_ok
