#!/bin/bash
# ABBA pairs on SQLite: A = before, B = after
export DJANGO_SECRET_KEY=$(python3 -c "print('x'*64)")
out=/tmp/b/abba-sqlite; mkdir -p $out
run() { # dir label i
  cd $1; rm -f /tmp/b/ab.sqlite3*; export PYTHONPATH=$1 DATABASE_URL=sqlite:////tmp/b/ab.sqlite3
  .venv/bin/python manage.py migrate -v0 >/dev/null 2>&1
  .venv/bin/python manage.py bench --runs 1 --duration 10 --batch 1,10 --output $out/$2-$3 > $out/$2-$3.log 2>&1
}
for i in 1 2 3; do run /tmp/abA before $i; run /tmp/abB after $i; run /tmp/abB after $((i+10)); run /tmp/abA before $((i+10)); done
echo done > $out/DONE
