# Shared by the image build scripts (source it; it defines functions only).
# shellcheck shell=bash

# The mirror is whatever apt on this host already uses; never hard-code a host name.
debian_mirror() {
    local suite="$1" uri=""
    if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
        # deb822: pick the URIs of the first stanza whose Suites lists the bare suite
        # (so the -security archive is not chosen).
        uri="$(awk -v suite="$suite" '
            function flush() { if (!found && has && u != "") { print u; found = 1 } u = ""; has = 0 }
            /^[[:space:]]*$/ { flush(); next }
            tolower($1) == "uris:"   { u = $2 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) has = 1 }
            END { flush() }' /etc/apt/sources.list.d/*.sources)"
    fi
    if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
        uri="$(awk -v suite="$suite" '
            $1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                          if ($(i + 1) == suite) { print $i; exit } }' /etc/apt/sources.list)"
    fi
    [[ -n "$uri" ]] || die "no Debian mirror for suite '$suite' found in the apt sources"
    printf '%s\n' "$uri"
}
