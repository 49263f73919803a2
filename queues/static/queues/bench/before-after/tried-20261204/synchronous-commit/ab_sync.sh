#!/bin/bash
cd /work/main; source /tmp/b/env.sh
export REDIS_URL=redis://127.0.0.1:6379/0 DATABASE_URL=postgres://postgres@127.0.0.1:5432/benchx
run() { # $1 label(on|off)
  psql -q -h 127.0.0.1 -U postgres -d test -c "drop database if exists benchx with (force)" -c "create database benchx" -c "alter database benchx set synchronous_commit = $1" 2>/dev/null
  .venv/bin/python manage.py migrate -v0 2>/dev/null
  r=$(.venv/bin/python manage.py bench --batch ${B:-1} --duration 15 --output /tmp/b/ab2/$1 2>&1 | grep -E "^\| ${B:-1} \|" )
  echo "$1 $r" >> /tmp/b/ab2.log
}
for i in 1 2 3 4; do
  if [ $((i%2)) = 1 ]; then run on; run off; else run off; run on; fi
done
echo done >> /tmp/b/ab2.log
