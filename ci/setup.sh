#!/usr/bin/env bash
# Installs the system packages the project needs on Debian 12 (as root), and
# nothing when they are already there. The Rust toolchain (cargo, rustfmt,
# clippy) is expected on the machine.
set -euo pipefail

# Keep in sync with vm/src/base.rs (TOOLS, FILES), vm/src/arch.rs (the
# guest architecture's QEMU and static libc) and kernel-patches/bases/6.12
# (the default base; the 7.1 base is a tarball no package ships).
base_version=$(sed -n 's/^version = //p' "$(dirname "$0")/../kernel-patches/bases/6.12")
packages=(
	"linux-source-6.12=${base_version}"
	qemu-system-x86 busybox-static protobuf-compiler ccache
	make gcc libc6-dev flex bison bc libelf-dev libssl-dev xz-utils git rsync
	iproute2 codespell
	# patches check: uapi headers compiled alone as C++ (g++), kernel-doc
	# (Perl on 6.12, Python on 7.1).
	g++ perl python3
	# The i386 build of the udp_repair kselftest (vm/src/arch.rs, compat).
	gcc-multilib libc6-dev-i386
)

missing=()
for p in "${packages[@]}"; do
	name=${p%%=*}
	want=${p#*=}
	have=$(dpkg-query -W -f '${Status} ${Version}' "$name" 2>/dev/null || true)
	case "$have" in
	"install ok installed "*)
		[ "$want" = "$p" ] || [ "${have##* }" = "$want" ] || missing+=("$p")
		;;
	*) missing+=("$p") ;;
	esac
done

if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "missing packages: ${missing[*]}" >&2
	echo "run as root: apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
	exit 2
fi
echo "installing: ${missing[*]}" >&2
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
