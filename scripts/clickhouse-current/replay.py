"""Runs a recording of recorder.py on the ClickHouse engine that chDB embeds (a current release).

    python3 replay.py FOLDER

Every statement runs in order; an insert's RowBinary body is read with the file() table
function under the columns it names, typed as the table declares them. Prints each failure,
then the rows and distinct ids of the history tables. Exits 1 if anything but the Kafka-engine
table failed (chDB runs no Kafka consumers, so that table cannot be made in-process).
"""
import glob
import json
import os
import re
import sys
import tempfile

from chdb import session

folder = sys.argv[1]
db = session.Session(tempfile.mkdtemp(prefix="chdb-"))
print("ClickHouse engine", db.query("SELECT version()", "TSV").data().strip())
ran, failed = 0, []
for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
    with open(path) as f:
        recorded = json.load(f)
    query = recorded["query"].strip()
    try:
        if recorded["body_file"]:
            insert = re.match(r"INSERT INTO (\S+) \(([^)]*)\) FORMAT RowBinary", query)
            table, columns = insert.group(1), [c.strip() for c in insert.group(2).split(",")]
            described = db.query(f"DESCRIBE TABLE {table}", "TSV").data().strip().split("\n")
            types = dict(line.split("\t")[:2] for line in described)
            structure = ", ".join(f"{c} {types[c]}" for c in columns)
            data = os.path.abspath(os.path.join(folder, recorded["body_file"]))
            db.query(f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM file('{data}', 'RowBinary', '{structure}')")
        else:
            db.query(query, "TSV")
        ran += 1
    except Exception as error:
        failed.append((query, str(error)))
        print("FAILED", query[:160].replace("\n", " "), "\n   ", str(error)[:300])
print(f"{ran} statements ran, {len(failed)} failed")
databases = [d for d in db.query("SHOW DATABASES", "TSV").data().split() if d not in ("system", "default", "INFORMATION_SCHEMA", "information_schema")]
for database in databases:
    for table in ["enriched_telemetry_history", "telemetry_history", "telemetry_anomalies"]:
        counts = db.query(f"SELECT count(), uniqExact(id) FROM {database}.{table}", "TSV").data().split()
        print(f"{database}.{table}: {counts[0]} rows, {counts[1]} distinct ids")
unexpected = [q for q, _ in failed if "ENGINE = Kafka" not in q]
sys.exit(1 if unexpected else 0)
