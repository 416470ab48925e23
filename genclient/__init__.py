"""The Generation Service's Python client and the ``genservice`` command's API side.

Needs only ``requests``: nothing here imports Flask or the server's packages (app, services,
database, workers), so ``pip install`` of this project on a client machine, or a copy of this
folder, is enough to call the API::

    from genclient import GenerationClient, make_lot

    with GenerationClient("your-shared-key", "http://127.0.0.1:5000") as client:
        answer = client.generate_sync(make_lot("lot-1", ["https://cdn.example.com/front.jpg"]), ["en", "de"])

A client added with ``genservice clients add`` signs with its own key instead::

    GenerationClient(base_url="http://127.0.0.1:5000", client_id="auction-a", key_id="key_...", secret="gsk_...")
"""
from genclient.client import *  # noqa: F401,F403
from genclient.client import __all__  # noqa: F401
