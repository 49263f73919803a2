import os, socket, time
def run(kind, cpus):
    if kind=="unix":
        a,b=socket.socketpair()
    else:
        l=socket.socket(); l.bind(("127.0.0.1",0)); l.listen(1)
        a=socket.create_connection(l.getsockname()); b,_=l.accept()
        for s in (a,b): s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY,1)
    pid=os.fork()
    if pid==0:
        os.sched_setaffinity(0,{cpus[1]})
        a.close()
        while d:=b.recv(64): b.sendall(d)
        os._exit(0)
    os.sched_setaffinity(0,{cpus[0]})
    b.close()
    n=20000
    best=None
    for r in range(3):
        t=time.perf_counter(); c=time.process_time()
        for _ in range(n):
            a.sendall(b"x"*40); a.recv(64)
        wall=(time.perf_counter()-t)/n*1e6; cpu=(time.process_time()-c)/n*1e6
        if best is None or wall<best[0]: best=(wall,cpu)
    a.close(); os.waitpid(pid,0)
    print(f"{kind:5} cpus={cpus} wall {best[0]:6.1f} us  parent cpu {best[1]:6.1f} us")
for cpus in ((0,0),(0,1)):
    for kind in ("unix","tcp"):
        run(kind,cpus)
