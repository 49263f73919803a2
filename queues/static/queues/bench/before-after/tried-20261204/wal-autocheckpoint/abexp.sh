# usage: abexp.sh PAIRS BATCHES DURATION ; A = no EXP_PRAGMA, B = EXP_PRAGMA=$EXPB
cd /work/main; . /tmp/b/env.sh
out=/tmp/b/abexp-$(date +%H%M); mkdir -p $out
for i in $(seq 1 $1); do
  for v in A B B A; do
    rm -f /tmp/b/sq.sqlite3*
    if [ $v = B ]; then export EXP_PRAGMA="$EXPB"; else unset EXP_PRAGMA; fi
    DATABASE_URL=sqlite:////tmp/b/sq.sqlite3 .venv/bin/python manage.py migrate -v0 2>/dev/null
    DATABASE_URL=sqlite:////tmp/b/sq.sqlite3 .venv/bin/python manage.py bench --batch $2 --duration $3 --output $out/$v$i 2>&1 | grep "^|" | grep -v -- "---\|batch" | awk -v v=$v -v i=$i '{print v, i, $2, $6}' >> $out/summary.txt
  done
done
echo done >> $out/summary.txt
