#!/bin/bash
cd /work/main; source /tmp/b/env.sh
export REDIS_URL=redis://127.0.0.1:6379/0 DATABASE_URL=postgres://postgres@127.0.0.1:5432/benchx
run() { # $1 label(sync|async)
  psql -q -h 127.0.0.1 -U postgres -d test -c "drop database if exists benchx with (force)" -c "create database benchx" 2>/dev/null
  .venv/bin/python manage.py migrate -v0 2>/dev/null
  [ $1 = async ] && psql -q -h 127.0.0.1 -U postgres -d benchx -f /tmp/b/recv_async.sql
  r=$(.venv/bin/python manage.py bench --batch ${B:-1} --duration 15 --output /tmp/b/ab3/$1 2>&1 | grep -E "^\| ${B:-1} \|" )
  echo "$1 $r" >> /tmp/b/ab3.log
}
for i in 1 2 3 4; do
  if [ $((i%2)) = 1 ]; then run sync; run async; else run async; run sync; fi
done
echo done >> /tmp/b/ab3.log
