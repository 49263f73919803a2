#!/usr/bin/env bash
# Old and new connection-sharing worker, ABBA: /tmp/abold is a clone of main at c8fb1df, /tmp/abnew at ae2e8cc.
# Run from the repository's root with its .venv; a fresh PostgreSQL database each run.
set -u; root=$(pwd); out=$root/queues/static/queues/bench/before-after/worker-pause; mkdir -p $out
export DJANGO_SECRET_KEY=bench DATABASE_URL=postgres://postgres@127.0.0.1:5432/benchx REDIS_URL=redis://127.0.0.1:6379/0
i=0
for which in old new new old old new new old; do
  i=$((i+1)); cd /tmp/ab$which
  psql -q -h 127.0.0.1 -U postgres -d test -c "drop database if exists benchx" -c "create database benchx" >/dev/null 2>&1; redis-cli flushdb >/dev/null
  d=$(mktemp -d); echo "== $i $which $(date -u +%T)"
  $root/.venv/bin/python manage.py bench --batch 1,100 --duration 10 --output $d 2>&1 | grep -E "^\| *(1|100) \|" 
  cp $d/*.json $out/$i-$which.json; rm -rf $d
done
echo "== done $(date -u +%T)"
