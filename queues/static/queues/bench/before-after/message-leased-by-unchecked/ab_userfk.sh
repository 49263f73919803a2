#!/bin/bash
cd /work/main; source /tmp/b/env.sh
export REDIS_URL=redis://127.0.0.1:6379/0 DATABASE_URL=postgres://postgres@127.0.0.1:5432/benchx
run() { # $1 label(fk|nofk)
  psql -q -h 127.0.0.1 -U postgres -d test -c "drop database if exists benchx with (force)" -c "create database benchx" 2>/dev/null
  .venv/bin/python manage.py migrate -v0 2>/dev/null
  [ $1 = nouserfk ] && psql -q -h 127.0.0.1 -U postgres -d benchx -c "ALTER TABLE queues_message DROP CONSTRAINT queues_message_leased_by_id_4ee95262_fk_auth_user_id"
  r=$(.venv/bin/python manage.py bench --batch ${B:-100} --duration 15 --output /tmp/b/ab4/$1 2>&1 | grep -E "^\| ${B:-100} \|" )
  echo "$1 $r" >> /tmp/b/ab4.log
}
for i in 1 2 3 4; do
  if [ $((i%2)) = 1 ]; then run fk; run nouserfk; else run nouserfk; run fk; fi
done
echo done >> /tmp/b/ab4.log
