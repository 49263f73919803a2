#!/bin/bash
# ABBA: be5aafd (/tmp/before) against main (/work/main), PostgreSQL, fresh DB each run.
set -u
source /tmp/b/env.sh
OUT=/tmp/b/ab-pg; mkdir -p $OUT
export REDIS_URL=redis://127.0.0.1:6379/0 DATABASE_URL=postgres://postgres@127.0.0.1:5432/benchx
one() { # label dir n
  psql -q -h 127.0.0.1 -U postgres -d test -c "drop database if exists benchx with (force)" -c "create database benchx" >/dev/null
  cd $2 && PYTHONPATH=$2 /work/main/.venv/bin/python manage.py migrate -v0
  echo "== $(date +%H:%M:%S) $1 pair $3"
  PYTHONPATH=$2 /work/main/.venv/bin/python manage.py bench --batch 1,10 --duration 15 --output $OUT/tmp 2>&1 | grep -E "acked|B ?=" | tail -4
  for f in $OUT/tmp/*.json; do mv $f $OUT/$1-pair$3.json; done; rm -rf $OUT/tmp
}
for n in 1 2 3 4 5 6; do
  if [ $((n % 2)) = 1 ]; then one before /tmp/before $n; one after /work/main $n
  else one after /work/main $n; one before /tmp/before $n; fi
done
echo "== done $(date +%H:%M:%S)"
