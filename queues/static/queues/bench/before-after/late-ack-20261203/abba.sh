#!/bin/bash
# ABBA: 836be8a (/tmp/before) against main (/work/main), both databases, fresh DB each run.
set -u
source /tmp/b/env.sh
OUT=/tmp/b/ab-ack; mkdir -p $OUT
export REDIS_URL=redis://127.0.0.1:6379/0
one() { # db label dir n
  if [ $1 = postgresql ]; then
    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/benchx
    psql -q -h 127.0.0.1 -U postgres -d test -c "drop database if exists benchx with (force)" -c "create database benchx" >/dev/null 2>&1
  else
    export DATABASE_URL=sqlite:////tmp/b/sq.sqlite3; rm -f /tmp/b/sq.sqlite3*
  fi
  cd $3 && PYTHONPATH=$3 /work/main/.venv/bin/python manage.py migrate -v0 2>/dev/null
  echo "== $(date +%H:%M:%S) $1 $2 pair $4"
  PYTHONPATH=$3 /work/main/.venv/bin/python manage.py bench --batch 1,100 --duration 10 --output $OUT/tmp 2>&1 | grep -E "acked" | sed 's/.*s  sent/sent/'
  for f in $OUT/tmp/*.json; do mv $f $OUT/$1-$2-pair$4.json; done; rm -rf $OUT/tmp
}
for db in postgresql sqlite; do
for n in 1 2 3 4; do
  if [ $((n % 2)) = 1 ]; then one $db before /tmp/before $n; one $db after /work/main $n
  else one $db after /work/main $n; one $db before /tmp/before $n; fi
done
done
echo "== done $(date +%H:%M:%S)"
