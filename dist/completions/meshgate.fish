# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_meshgate_global_optspecs
    string join \n bind= host= port= config= fallback= no-loopback token-file= no-follow wait= upstream= upstream-connect-timeout= upstream-timeout= max-header-bytes= idle-timeout= max-connections= max-body-bytes= upstream-max-body-bytes= allow-host= allow-origin= allow-peer= max-connections-per-address= max-unauthenticated-per-address= tcp= tls-cert= tls-key= tls= tls-name= state-dir= tls-loopback log-format= log-level= access-log h/help V/version
end

function __fish_meshgate_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_meshgate_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_meshgate_using_subcommand
    set -l cmd (__fish_meshgate_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c meshgate -n "__fish_meshgate_needs_command" -l bind -d 'Where to listen: a mode (loopback, lan, all, tailnet, wireguard, ...), auto, iface:NAME, cidr:NETWORK, an IP, or custom with --host. Repeat for a union. [env: MESHGATE_BIND, comma-separated; empty is unset]' -r -f -a "loopback\t''
tailnet\t''
netbird\t''
firezone\t''
zerotier\t''
nebula\t''
netmaker\t''
husarnet\t''
tinc\t''
openvpn\t''
wireguard\t''
cloudflare-warp\t''
yggdrasil\t''
lan\t''
all\t''
auto\t''
custom\t''
iface:\t''
cidr:\t''"
complete -c meshgate -n "__fish_meshgate_needs_command" -l host -d 'The address for `--bind custom`' -r
complete -c meshgate -n "__fish_meshgate_needs_command" -l port -d 'The port [default: 18789] [env: MESHGATE_PORT]' -r
complete -c meshgate -n "__fish_meshgate_needs_command" -l config -d 'A TOML config file [default: /etc/meshgate/meshgate.toml for root, else ~/.config/meshgate/meshgate.toml, when it exists] [env: MESHGATE_CONFIG]' -r -F
complete -c meshgate -n "__fish_meshgate_needs_command" -l fallback -d 'When nothing matches: serve on loopback, or fail (exit 69) [default: loopback]' -r -f -a "loopback\t'Serve on loopback only, and say so'
fail\t'Serve nothing: exit 69'"
complete -c meshgate -n "__fish_meshgate_needs_command" -l token-file -d 'A file holding the bearer token (required for non-loopback listeners)' -r -F
complete -c meshgate -n "__fish_meshgate_needs_command" -l wait -d 'At start, wait up to SECONDS for the selectors to match before falling back (with --fallback fail, an expired wait exits 69)' -r
complete -c meshgate -n "__fish_meshgate_needs_command" -l upstream -d 'Forward every authorized request to this service: http://HOST:PORT or unix:/PATH. meshgate\'s own routes move under /_meshgate/. [env: MESHGATE_UPSTREAM]' -r
complete -c meshgate -n "__fish_meshgate_needs_command" -l upstream-connect-timeout -d 'Seconds to open a connection to the upstream before answering 504 [default: 5]' -r
complete -c meshgate -n "__fish_meshgate_needs_command" -l upstream-timeout -d 'Seconds to wait for the upstream\'s response headers before answering 504 [default: 60]. Bodies (downloads, event streams) are not cut off' -r
complete -c meshgate -n "__fish_meshgate_needs_command" -l max-header-bytes -d 'The largest request head (request line and headers) a client may send; larger gets 431 [default: 65536; at least 8192]' -r
complete -c meshgate -n "__fish_meshgate_needs_command" -l idle-timeout -d 'Seconds a client connection may take to send a request head, idle keep-alive time included, before it is closed [default: 60]' -r
complete -c meshgate -n "__fish_meshgate_needs_command" -l max-connections -d 'The most client connections open at once, over all listeners; more wait in the listen queue until one closes [default: 512]' -r
complete -c meshgate -n "__fish_meshgate_needs_command" -l max-body-bytes -d 'The largest request body meshgate\'s own routes accept; larger gets 413 [default: 2097152]' -r
complete -c meshgate -n "__fish_meshgate_needs_command" -l upstream-max-body-bytes -d 'The largest request body forwarded to the upstream; larger gets 413 [default: no cap]. Bodies stream either way' -r
complete -c meshgate -n "__fish_meshgate_needs_command" -l allow-host -d 'An extra `Host` name the loopback listeners answer to (besides localhost, 127.x.y.z and `[::1]`); others get 421. Repeatable' -r
complete -c meshgate -n "__fish_meshgate_needs_command" -l allow-origin -d 'An extra `Origin` a WebSocket upgrade may come from (besides the origin it is sent to); others get 403. Repeatable' -r
complete -c meshgate -n "__fish_meshgate_needs_command" -l allow-peer -d 'Let this mesh peer in without a token: a name from the config file\'s `[peers]`, a base64 WireGuard public key, a tailnet login (user@example.com) or a tailnet tag (tag:NAME). Repeatable; replaces the config file\'s allow_peers' -r
complete -c meshgate -n "__fish_meshgate_needs_command" -l max-connections-per-address -d 'The most connections one address may hold open on non-loopback listeners [default: 64]' -r
complete -c meshgate -n "__fish_meshgate_needs_command" -l max-unauthenticated-per-address -d 'The most connections one address may hold open before presenting a token, a session or an allowed peer identity [default: 16]' -r
complete -c meshgate -n "__fish_meshgate_needs_command" -l tcp -d 'Forward TCP port PORT on the bind\'s addresses to UPSTREAM (tcp://HOST:PORT, HOST:PORT or unix:/PATH), admitting only the peers of the allow-list (--allow-peer); named tcp-PORT. Repeatable. More services: `[[service]]` tables in the config file' -r
complete -c meshgate -n "__fish_meshgate_needs_command" -l tls-cert -d 'Serve HTTPS with this PEM certificate chain (with --tls-key); reloaded when the files change or on SIGHUP' -r -F
complete -c meshgate -n "__fish_meshgate_needs_command" -l tls-key -d 'The PEM private key of --tls-cert' -r -F
complete -c meshgate -n "__fish_meshgate_needs_command" -l tls -d 'Serve HTTPS with a certificate meshgate gets itself: `internal` (from a local CA in --state-dir that devices trust once: `meshgate ca`), `tailscale` (this node\'s *.ts.net certificate from tailscaled) or `self-signed` (its key\'s SHA-256 printed at start, for pinning)' -r -f -a "self-signed\t'A self-signed certificate over a key kept in the state directory'
internal\t'Short-lived certificates from a local CA kept in the state directory, limited by name constraints to the mesh\'s addresses and your names'
tailscale\t'This node\'s *.ts.net certificate from tailscaled (HTTPS certificates must be on in the tailnet)'"
complete -c meshgate -n "__fish_meshgate_needs_command" -l tls-name -d 'A DNS name the self-signed or internal certificate also names (a MagicDNS name, say); a new local CA permits exactly these. Repeatable' -r
complete -c meshgate -n "__fish_meshgate_needs_command" -l state-dir -d 'Where the self-signed key and the local CA live [default: $STATE_DIRECTORY, else /var/lib/meshgate for root, else ~/.local/share/meshgate] [env: MESHGATE_STATE_DIR]' -r -F
complete -c meshgate -n "__fish_meshgate_needs_command" -l log-format -d 'The log\'s format on stderr: text for a person, json for a collector (one object a line) [default: text] [env: MESHGATE_LOG_FORMAT]' -r -f -a "text\t'Lines for a person; coloured only on a terminal and without NO_COLOR'
json\t'One JSON object per line'"
complete -c meshgate -n "__fish_meshgate_needs_command" -l log-level -d 'The log level or filter (error, warn, info, debug, trace, or a tracing filter such as `meshgate=debug`); above RUST_LOG [default: info]' -r
complete -c meshgate -n "__fish_meshgate_needs_command" -l no-loopback -d 'Do not add the 127.0.0.1/::1 companion listener beside non-loopback ones'
complete -c meshgate -n "__fish_meshgate_needs_command" -l no-follow -d 'Resolve once at start; do not follow interface changes'
complete -c meshgate -n "__fish_meshgate_needs_command" -l tls-loopback -d 'Serve HTTPS on the loopback listeners too (they stay plain HTTP otherwise)'
complete -c meshgate -n "__fish_meshgate_needs_command" -l access-log -d 'Log one line per request (listener, peer, identity, method, path without the query, status, bytes, duration); never a token or cookie'
complete -c meshgate -n "__fish_meshgate_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c meshgate -n "__fish_meshgate_needs_command" -s V -l version -d 'Print version'
complete -c meshgate -n "__fish_meshgate_needs_command" -f -a "serve" -d 'Serve on the resolved addresses (the default)'
complete -c meshgate -n "__fish_meshgate_needs_command" -f -a "explain" -d 'Show which addresses a bind would use, and why; binds nothing'
complete -c meshgate -n "__fish_meshgate_needs_command" -f -a "providers" -d 'List the bind modes linked into this program'
complete -c meshgate -n "__fish_meshgate_needs_command" -f -a "peers" -d 'List the WireGuard peers of the interfaces a bind resolves to: name, key, allowed-ips, last handshake, and whether each needs the token'
complete -c meshgate -n "__fish_meshgate_needs_command" -f -a "status" -d 'Ask the gateway running on this host (through its loopback door) where it listens, its services and peers; exit 3 when none answers'
complete -c meshgate -n "__fish_meshgate_needs_command" -f -a "completions" -d 'Print a shell completion script: `meshgate completions bash > /etc/bash_completion.d/meshgate`'
complete -c meshgate -n "__fish_meshgate_needs_command" -f -a "man" -d 'Print the man page (roff): `meshgate man | man -l -`'
complete -c meshgate -n "__fish_meshgate_needs_command" -f -a "ca" -d 'Print the local CA\'s certificate (`--tls internal`) to import into browsers and devices; its fingerprint, constraints and path on stderr'
complete -c meshgate -n "__fish_meshgate_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l bind -d 'Where to listen: a mode (loopback, lan, all, tailnet, wireguard, ...), auto, iface:NAME, cidr:NETWORK, an IP, or custom with --host. Repeat for a union. [env: MESHGATE_BIND, comma-separated; empty is unset]' -r -f -a "loopback\t''
tailnet\t''
netbird\t''
firezone\t''
zerotier\t''
nebula\t''
netmaker\t''
husarnet\t''
tinc\t''
openvpn\t''
wireguard\t''
cloudflare-warp\t''
yggdrasil\t''
lan\t''
all\t''
auto\t''
custom\t''
iface:\t''
cidr:\t''"
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l host -d 'The address for `--bind custom`' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l port -d 'The port [default: 18789] [env: MESHGATE_PORT]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l config -d 'A TOML config file [default: /etc/meshgate/meshgate.toml for root, else ~/.config/meshgate/meshgate.toml, when it exists] [env: MESHGATE_CONFIG]' -r -F
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l fallback -d 'When nothing matches: serve on loopback, or fail (exit 69) [default: loopback]' -r -f -a "loopback\t'Serve on loopback only, and say so'
fail\t'Serve nothing: exit 69'"
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l token-file -d 'A file holding the bearer token (required for non-loopback listeners)' -r -F
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l wait -d 'At start, wait up to SECONDS for the selectors to match before falling back (with --fallback fail, an expired wait exits 69)' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l upstream -d 'Forward every authorized request to this service: http://HOST:PORT or unix:/PATH. meshgate\'s own routes move under /_meshgate/. [env: MESHGATE_UPSTREAM]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l upstream-connect-timeout -d 'Seconds to open a connection to the upstream before answering 504 [default: 5]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l upstream-timeout -d 'Seconds to wait for the upstream\'s response headers before answering 504 [default: 60]. Bodies (downloads, event streams) are not cut off' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l max-header-bytes -d 'The largest request head (request line and headers) a client may send; larger gets 431 [default: 65536; at least 8192]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l idle-timeout -d 'Seconds a client connection may take to send a request head, idle keep-alive time included, before it is closed [default: 60]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l max-connections -d 'The most client connections open at once, over all listeners; more wait in the listen queue until one closes [default: 512]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l max-body-bytes -d 'The largest request body meshgate\'s own routes accept; larger gets 413 [default: 2097152]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l upstream-max-body-bytes -d 'The largest request body forwarded to the upstream; larger gets 413 [default: no cap]. Bodies stream either way' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l allow-host -d 'An extra `Host` name the loopback listeners answer to (besides localhost, 127.x.y.z and `[::1]`); others get 421. Repeatable' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l allow-origin -d 'An extra `Origin` a WebSocket upgrade may come from (besides the origin it is sent to); others get 403. Repeatable' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l allow-peer -d 'Let this mesh peer in without a token: a name from the config file\'s `[peers]`, a base64 WireGuard public key, a tailnet login (user@example.com) or a tailnet tag (tag:NAME). Repeatable; replaces the config file\'s allow_peers' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l max-connections-per-address -d 'The most connections one address may hold open on non-loopback listeners [default: 64]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l max-unauthenticated-per-address -d 'The most connections one address may hold open before presenting a token, a session or an allowed peer identity [default: 16]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l tcp -d 'Forward TCP port PORT on the bind\'s addresses to UPSTREAM (tcp://HOST:PORT, HOST:PORT or unix:/PATH), admitting only the peers of the allow-list (--allow-peer); named tcp-PORT. Repeatable. More services: `[[service]]` tables in the config file' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l tls-cert -d 'Serve HTTPS with this PEM certificate chain (with --tls-key); reloaded when the files change or on SIGHUP' -r -F
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l tls-key -d 'The PEM private key of --tls-cert' -r -F
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l tls -d 'Serve HTTPS with a certificate meshgate gets itself: `internal` (from a local CA in --state-dir that devices trust once: `meshgate ca`), `tailscale` (this node\'s *.ts.net certificate from tailscaled) or `self-signed` (its key\'s SHA-256 printed at start, for pinning)' -r -f -a "self-signed\t'A self-signed certificate over a key kept in the state directory'
internal\t'Short-lived certificates from a local CA kept in the state directory, limited by name constraints to the mesh\'s addresses and your names'
tailscale\t'This node\'s *.ts.net certificate from tailscaled (HTTPS certificates must be on in the tailnet)'"
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l tls-name -d 'A DNS name the self-signed or internal certificate also names (a MagicDNS name, say); a new local CA permits exactly these. Repeatable' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l state-dir -d 'Where the self-signed key and the local CA live [default: $STATE_DIRECTORY, else /var/lib/meshgate for root, else ~/.local/share/meshgate] [env: MESHGATE_STATE_DIR]' -r -F
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l log-format -d 'The log\'s format on stderr: text for a person, json for a collector (one object a line) [default: text] [env: MESHGATE_LOG_FORMAT]' -r -f -a "text\t'Lines for a person; coloured only on a terminal and without NO_COLOR'
json\t'One JSON object per line'"
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l log-level -d 'The log level or filter (error, warn, info, debug, trace, or a tracing filter such as `meshgate=debug`); above RUST_LOG [default: info]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l no-loopback -d 'Do not add the 127.0.0.1/::1 companion listener beside non-loopback ones'
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l no-follow -d 'Resolve once at start; do not follow interface changes'
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l tls-loopback -d 'Serve HTTPS on the loopback listeners too (they stay plain HTTP otherwise)'
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -l access-log -d 'Log one line per request (listener, peer, identity, method, path without the query, status, bytes, duration); never a token or cookie'
complete -c meshgate -n "__fish_meshgate_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l bind -d 'Where to listen: a mode (loopback, lan, all, tailnet, wireguard, ...), auto, iface:NAME, cidr:NETWORK, an IP, or custom with --host. Repeat for a union. [env: MESHGATE_BIND, comma-separated; empty is unset]' -r -f -a "loopback\t''
tailnet\t''
netbird\t''
firezone\t''
zerotier\t''
nebula\t''
netmaker\t''
husarnet\t''
tinc\t''
openvpn\t''
wireguard\t''
cloudflare-warp\t''
yggdrasil\t''
lan\t''
all\t''
auto\t''
custom\t''
iface:\t''
cidr:\t''"
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l host -d 'The address for `--bind custom`' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l port -d 'The port [default: 18789] [env: MESHGATE_PORT]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l config -d 'A TOML config file [default: /etc/meshgate/meshgate.toml for root, else ~/.config/meshgate/meshgate.toml, when it exists] [env: MESHGATE_CONFIG]' -r -F
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l fallback -d 'When nothing matches: serve on loopback, or fail (exit 69) [default: loopback]' -r -f -a "loopback\t'Serve on loopback only, and say so'
fail\t'Serve nothing: exit 69'"
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l token-file -d 'A file holding the bearer token (required for non-loopback listeners)' -r -F
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l wait -d 'At start, wait up to SECONDS for the selectors to match before falling back (with --fallback fail, an expired wait exits 69)' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l upstream -d 'Forward every authorized request to this service: http://HOST:PORT or unix:/PATH. meshgate\'s own routes move under /_meshgate/. [env: MESHGATE_UPSTREAM]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l upstream-connect-timeout -d 'Seconds to open a connection to the upstream before answering 504 [default: 5]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l upstream-timeout -d 'Seconds to wait for the upstream\'s response headers before answering 504 [default: 60]. Bodies (downloads, event streams) are not cut off' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l max-header-bytes -d 'The largest request head (request line and headers) a client may send; larger gets 431 [default: 65536; at least 8192]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l idle-timeout -d 'Seconds a client connection may take to send a request head, idle keep-alive time included, before it is closed [default: 60]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l max-connections -d 'The most client connections open at once, over all listeners; more wait in the listen queue until one closes [default: 512]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l max-body-bytes -d 'The largest request body meshgate\'s own routes accept; larger gets 413 [default: 2097152]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l upstream-max-body-bytes -d 'The largest request body forwarded to the upstream; larger gets 413 [default: no cap]. Bodies stream either way' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l allow-host -d 'An extra `Host` name the loopback listeners answer to (besides localhost, 127.x.y.z and `[::1]`); others get 421. Repeatable' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l allow-origin -d 'An extra `Origin` a WebSocket upgrade may come from (besides the origin it is sent to); others get 403. Repeatable' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l allow-peer -d 'Let this mesh peer in without a token: a name from the config file\'s `[peers]`, a base64 WireGuard public key, a tailnet login (user@example.com) or a tailnet tag (tag:NAME). Repeatable; replaces the config file\'s allow_peers' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l max-connections-per-address -d 'The most connections one address may hold open on non-loopback listeners [default: 64]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l max-unauthenticated-per-address -d 'The most connections one address may hold open before presenting a token, a session or an allowed peer identity [default: 16]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l tcp -d 'Forward TCP port PORT on the bind\'s addresses to UPSTREAM (tcp://HOST:PORT, HOST:PORT or unix:/PATH), admitting only the peers of the allow-list (--allow-peer); named tcp-PORT. Repeatable. More services: `[[service]]` tables in the config file' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l tls-cert -d 'Serve HTTPS with this PEM certificate chain (with --tls-key); reloaded when the files change or on SIGHUP' -r -F
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l tls-key -d 'The PEM private key of --tls-cert' -r -F
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l tls -d 'Serve HTTPS with a certificate meshgate gets itself: `internal` (from a local CA in --state-dir that devices trust once: `meshgate ca`), `tailscale` (this node\'s *.ts.net certificate from tailscaled) or `self-signed` (its key\'s SHA-256 printed at start, for pinning)' -r -f -a "self-signed\t'A self-signed certificate over a key kept in the state directory'
internal\t'Short-lived certificates from a local CA kept in the state directory, limited by name constraints to the mesh\'s addresses and your names'
tailscale\t'This node\'s *.ts.net certificate from tailscaled (HTTPS certificates must be on in the tailnet)'"
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l tls-name -d 'A DNS name the self-signed or internal certificate also names (a MagicDNS name, say); a new local CA permits exactly these. Repeatable' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l state-dir -d 'Where the self-signed key and the local CA live [default: $STATE_DIRECTORY, else /var/lib/meshgate for root, else ~/.local/share/meshgate] [env: MESHGATE_STATE_DIR]' -r -F
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l log-format -d 'The log\'s format on stderr: text for a person, json for a collector (one object a line) [default: text] [env: MESHGATE_LOG_FORMAT]' -r -f -a "text\t'Lines for a person; coloured only on a terminal and without NO_COLOR'
json\t'One JSON object per line'"
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l log-level -d 'The log level or filter (error, warn, info, debug, trace, or a tracing filter such as `meshgate=debug`); above RUST_LOG [default: info]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l no-loopback -d 'Do not add the 127.0.0.1/::1 companion listener beside non-loopback ones'
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l no-follow -d 'Resolve once at start; do not follow interface changes'
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l tls-loopback -d 'Serve HTTPS on the loopback listeners too (they stay plain HTTP otherwise)'
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l access-log -d 'Log one line per request (listener, peer, identity, method, path without the query, status, bytes, duration); never a token or cookie'
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -l json -d 'Print one JSON object'
complete -c meshgate -n "__fish_meshgate_using_subcommand explain" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c meshgate -n "__fish_meshgate_using_subcommand providers" -l json -d 'Print one JSON object'
complete -c meshgate -n "__fish_meshgate_using_subcommand providers" -s h -l help -d 'Print help'
complete -c meshgate -n "__fish_meshgate_using_subcommand peers" -l bind -d 'Where to listen: a mode (loopback, lan, all, tailnet, wireguard, ...), auto, iface:NAME, cidr:NETWORK, an IP, or custom with --host. Repeat for a union. [env: MESHGATE_BIND, comma-separated; empty is unset]' -r -f -a "loopback\t''
tailnet\t''
netbird\t''
firezone\t''
zerotier\t''
nebula\t''
netmaker\t''
husarnet\t''
tinc\t''
openvpn\t''
wireguard\t''
cloudflare-warp\t''
yggdrasil\t''
lan\t''
all\t''
auto\t''
custom\t''
iface:\t''
cidr:\t''"
complete -c meshgate -n "__fish_meshgate_using_subcommand peers" -l host -d 'The address for `--bind custom`' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand peers" -l port -d 'The port [default: 18789] [env: MESHGATE_PORT]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand peers" -l config -d 'A TOML config file [default: /etc/meshgate/meshgate.toml for root, else ~/.config/meshgate/meshgate.toml, when it exists] [env: MESHGATE_CONFIG]' -r -F
complete -c meshgate -n "__fish_meshgate_using_subcommand peers" -l fallback -d 'When nothing matches: serve on loopback, or fail (exit 69) [default: loopback]' -r -f -a "loopback\t'Serve on loopback only, and say so'
fail\t'Serve nothing: exit 69'"
complete -c meshgate -n "__fish_meshgate_using_subcommand peers" -l allow-peer -d 'Judge "allowed" by these instead of the config file\'s allow_peers' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand peers" -l no-loopback -d 'Do not add the 127.0.0.1/::1 companion listener beside non-loopback ones'
complete -c meshgate -n "__fish_meshgate_using_subcommand peers" -l json -d 'Print one JSON object'
complete -c meshgate -n "__fish_meshgate_using_subcommand peers" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c meshgate -n "__fish_meshgate_using_subcommand status" -l port -d 'The gateway\'s port [default: 18789]' -r
complete -c meshgate -n "__fish_meshgate_using_subcommand status" -l config -d 'The config file the gateway was started with (for its port)' -r -F
complete -c meshgate -n "__fish_meshgate_using_subcommand status" -l json -d 'Print the gateway\'s status document as JSON'
complete -c meshgate -n "__fish_meshgate_using_subcommand status" -s h -l help -d 'Print help'
complete -c meshgate -n "__fish_meshgate_using_subcommand completions" -s h -l help -d 'Print help'
complete -c meshgate -n "__fish_meshgate_using_subcommand man" -s h -l help -d 'Print help'
complete -c meshgate -n "__fish_meshgate_using_subcommand ca" -l state-dir -d 'Where the local CA lives [default: as serve: $STATE_DIRECTORY, else /var/lib/meshgate for root, else ~/.local/share/meshgate] [env: MESHGATE_STATE_DIR]' -r -F
complete -c meshgate -n "__fish_meshgate_using_subcommand ca" -l config -d 'A TOML config file (its state_dir is used when --state-dir is not given) [env: MESHGATE_CONFIG]' -r -F
complete -c meshgate -n "__fish_meshgate_using_subcommand ca" -l der -d 'Print the certificate as DER (for phones) instead of PEM'
complete -c meshgate -n "__fish_meshgate_using_subcommand ca" -s h -l help -d 'Print help'
complete -c meshgate -n "__fish_meshgate_using_subcommand help; and not __fish_seen_subcommand_from serve explain providers peers status completions man ca help" -f -a "serve" -d 'Serve on the resolved addresses (the default)'
complete -c meshgate -n "__fish_meshgate_using_subcommand help; and not __fish_seen_subcommand_from serve explain providers peers status completions man ca help" -f -a "explain" -d 'Show which addresses a bind would use, and why; binds nothing'
complete -c meshgate -n "__fish_meshgate_using_subcommand help; and not __fish_seen_subcommand_from serve explain providers peers status completions man ca help" -f -a "providers" -d 'List the bind modes linked into this program'
complete -c meshgate -n "__fish_meshgate_using_subcommand help; and not __fish_seen_subcommand_from serve explain providers peers status completions man ca help" -f -a "peers" -d 'List the WireGuard peers of the interfaces a bind resolves to: name, key, allowed-ips, last handshake, and whether each needs the token'
complete -c meshgate -n "__fish_meshgate_using_subcommand help; and not __fish_seen_subcommand_from serve explain providers peers status completions man ca help" -f -a "status" -d 'Ask the gateway running on this host (through its loopback door) where it listens, its services and peers; exit 3 when none answers'
complete -c meshgate -n "__fish_meshgate_using_subcommand help; and not __fish_seen_subcommand_from serve explain providers peers status completions man ca help" -f -a "completions" -d 'Print a shell completion script: `meshgate completions bash > /etc/bash_completion.d/meshgate`'
complete -c meshgate -n "__fish_meshgate_using_subcommand help; and not __fish_seen_subcommand_from serve explain providers peers status completions man ca help" -f -a "man" -d 'Print the man page (roff): `meshgate man | man -l -`'
complete -c meshgate -n "__fish_meshgate_using_subcommand help; and not __fish_seen_subcommand_from serve explain providers peers status completions man ca help" -f -a "ca" -d 'Print the local CA\'s certificate (`--tls internal`) to import into browsers and devices; its fingerprint, constraints and path on stderr'
complete -c meshgate -n "__fish_meshgate_using_subcommand help; and not __fish_seen_subcommand_from serve explain providers peers status completions man ca help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
