from queues import services


def test_send_receive_ack__round_trip(api, queue):
    sent = api.post(f"/api/v1/queues/{queue.name}/messages/", {"body": "hello"}, format="json")
    assert sent.status_code == 201, sent.content
    got = api.post(f"/api/v1/queues/{queue.name}/receive/", {"consumer": "w1"}, format="json")
    assert got.status_code == 200
    [message] = got.json()["messages"]
    assert message["body"] == "hello"
    acked = api.post(f"/api/v1/queues/{queue.name}/ack/", {"receipts": [message["receipt"]]}, format="json")
    assert acked.json() == {"results": [{"receipt": message["receipt"], "status": services.ACKED}]}
