#!/bin/bash
# ABBA: tcp vs unix socket to PostgreSQL, B=1, fresh DB each
cd /work/main; source /tmp/b/env.sh
export REDIS_URL=redis://127.0.0.1:6379/0
run() { # $1 label $2 url
  psql -q -h 127.0.0.1 -U postgres -d test -c "drop database if exists benchx with (force)" -c "create database benchx" 2>/dev/null
  DATABASE_URL=$2 .venv/bin/python manage.py migrate -v0 2>/dev/null
  r=$(DATABASE_URL=$2 .venv/bin/python manage.py bench --batch ${B:-1} --duration 15 --output /tmp/b/ab/$1 2>&1 | grep -E "^\| ${B:-1} \|" )
  echo "$1 $r" >> /tmp/b/ab.log
}
T=postgres://postgres@127.0.0.1:5432/benchx
U=postgres://postgres@%2Fvar%2Frun%2Fpostgresql/benchx
for i in 1 2 3 4; do
  if [ $((i%2)) = 1 ]; then run tcp $T; run unix $U; else run unix $U; run tcp $T; fi
done
echo done >> /tmp/b/ab.log
