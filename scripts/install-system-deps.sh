#!/bin/sh
# Install the Debian packages the end-to-end tests and benchmarks need, only those missing.
# Idempotent and quiet: prints nothing and changes nothing when all are installed.
# Needs root to install; without root it only says what is missing (the e2e tests then skip).
# The packaged Postfix and Dovecot are NOT started or configured: the tests run private instances.
set -eu

PACKAGES="${MAILPOLICY_SYSTEM_PACKAGES:-postfix dovecot-core dovecot-imapd dovecot-lmtpd dovecot-sqlite dovecot-pgsql sqlite3 postgresql knot}"

missing=""
for pkg in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: missing:$missing (not a Debian/Ubuntu system; install them by hand)" >&2
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-system-deps: missing:$missing; run as root: sudo $0" >&2
    exit 0
fi

echo "install-system-deps: installing$missing" >&2
# Postfix: no configuration (no questions, no /etc/postfix/main.cf written).
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections

# Keep the packages from starting their default instances while they are installed
# (a policy-rc.d that exits 101); remove it again only if we created it.
created_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
fi
cleanup() { [ -n "$created_policy" ] && rm -f /usr/sbin/policy-rc.d; return 0; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt_quiet() { apt-get -qq -o Dpkg::Use-Pty=0 "$@" >/dev/null; }
# shellcheck disable=SC2086  # word splitting of the package list is intended
if ! apt_quiet install -y --no-install-recommends $missing 2>/dev/null; then
    apt_quiet update
    apt_quiet install -y --no-install-recommends $missing
fi
