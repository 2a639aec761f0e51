# Sourced by scripts/bench-sinks and scripts/bench-hunts: ClickHouse and PostgreSQL on free
# loopback ports with their files under "$work" (recipes in the tests' common/{clickhouse,postgres}.rs).
# Needs "$work" and the "pids" array of the sourcing script, whose cleanup stops what is in it.

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_clickhouse: sets clickhouse_url and clickhouse_pid; with clickhouse_log_queries=1 the
# server logs every query to system.query_log (duration, peak memory).
start_clickhouse() {
  local server dir="$work/clickhouse" http tcp
  server="$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)"
  [ -x "$server" ] || { echo "clickhouse-server is missing: apt-get install clickhouse-server clickhouse-client" >&2; exit 1; }
  mkdir -p "$dir"
  http="$(port)"; tcp="$(port)"
  cat > "$dir/config.xml" <<XML
<yandex>
<logger><level>warning</level><log>$dir/server.log</log><errorlog>$dir/error.log</errorlog></logger>
<listen_host>127.0.0.1</listen_host><http_port>$http</http_port><tcp_port>$tcp</tcp_port>
<path>$dir/data/</path><tmp_path>$dir/tmp/</tmp_path><user_files_path>$dir/user_files/</user_files_path>
<users_config>$dir/users.xml</users_config><default_profile>default</default_profile>
<default_database>default</default_database><timezone>UTC</timezone>
<mark_cache_size>536870912</mark_cache_size>
</yandex>
XML
  cat > "$dir/users.xml" <<XML
<yandex><profiles><default><log_queries>${clickhouse_log_queries:-0}</log_queries></default></profiles><users><default><password></password>
<networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
<quotas><default></default></quotas></yandex>
XML
  "$server" --config-file="$dir/config.xml" > "$dir/stdout.log" 2>&1 &
  pids+=($!)
  clickhouse_pid=$!
  clickhouse_url="http://127.0.0.1:$http"
  until curl -sf "$clickhouse_url/ping" >/dev/null; do sleep 0.1; done
}

# clickhouse_query SQL: prints the answer.
clickhouse_query() { curl -sf "$clickhouse_url/" --data-binary "$1"; }

# start_postgres: sets postgres_port (user postgres, trust, no password).
start_postgres() {
  local bin dir="$work/postgres"
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -n 1)"
  [ -n "$bin" ] || { echo "PostgreSQL is missing: apt-get install postgresql" >&2; exit 1; }
  mkdir -p "$dir"
  postgres_port="$(port)"
  local as=()
  # initdb refuses root: the server runs as postgres, which needs to reach its folder.
  [ "$(id -u)" = 0 ] && { chmod o+x "$work"; chown postgres "$dir"; as=(runuser -u postgres --); }
  "${as[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres > "$dir/initdb.log" 2>&1
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -o "-p $postgres_port -k $dir -c listen_addresses=127.0.0.1" \
    -l "$dir/log" -w start > /dev/null
  postgres_stop=("${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast stop)
}

stop_postgres() { [ -n "${postgres_stop:-}" ] && "${postgres_stop[@]}" > /dev/null 2>&1 || true; }
