"""examples/rest: CRUD over path parameters, each validation error as JSON, the router's 405 and
the server's 413, hostile bodies, and concurrent writers. Usage: rest_test.py BUILD/examples/rest"""
import json
import sys
import threading
import unittest

from example_process import Example

BINARY = None


class Rest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ex = Example(BINARY).__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.ex.__exit__(None)

    def post(self, body):
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        return self.ex.request("POST", "/items", body=body,
                               headers={"Content-Type": "application/json"})

    def assert_json_error(self, response, status, message):
        got_status, headers, body = response
        self.assertEqual(got_status, status, body)
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(json.loads(body), {"error": message})

    def test_create_read_list_delete(self):
        status, headers, body = self.post({"title": "milk"})
        self.assertEqual(status, 201, body)
        item = json.loads(body)
        self.assertEqual(item["title"], "milk")
        self.assertIs(item["done"], False)
        self.assertEqual(headers["location"], "/items/%d" % item["id"])

        status, _, body = self.post({"title": "bread", "done": True})
        self.assertEqual(status, 201)
        bread = json.loads(body)
        self.assertIs(bread["done"], True)

        self.assertEqual(self.ex.get_json(headers["location"]), item)  # the path parameter
        listed = self.ex.get_json("/items")
        self.assertIn(item, listed)
        self.assertIn(bread, listed)

        status, _, body = self.ex.request("DELETE", headers["location"])
        self.assertEqual((status, body), (204, b""))
        self.assert_json_error(self.ex.request("GET", headers["location"]), 404, "no such item")
        self.assert_json_error(self.ex.request("DELETE", headers["location"]), 404, "no such item")
        self.assertNotIn(item, self.ex.get_json("/items"))
        self.assertEqual(self.ex.get_json("/items/%d" % bread["id"]), bread)

    def test_bad_bodies_are_400_with_a_json_error(self):
        cases = [
            (b"{not json", "body is not valid JSON"),
            (b"", "body is not valid JSON"),
            (b'{"title": "x"} trailing', "body is not valid JSON"),
            (b'{"title": "\xff\xfe"}', "body is not valid JSON"),  # not UTF-8
            (b"[1, 2]", "body must be a JSON object"),
            (b'"milk"', "body must be a JSON object"),
            (b"{}", "missing field: title"),
            (b'{"name": "milk"}', "missing field: title"),
            (b'{"title": 42}', "title must be a string"),
            (b'{"title": null}', "title must be a string"),
            (b'{"title": ["milk"]}', "title must be a string"),
            (b'{"title": ""}', "title must be 1 to 200 bytes long"),
            (json.dumps({"title": "x" * 201}).encode(), "title must be 1 to 200 bytes long"),
            (b'{"title": "milk", "done": "yes"}', "done must be a boolean"),
            (b'{"title": "milk", "done": 1}', "done must be a boolean"),
        ]
        for body, message in cases:
            with self.subTest(body=body[:40]):
                self.assert_json_error(self.post(body), 400, message)

    def test_ids_that_are_not_positive_integers_are_400(self):
        for path in ["/items/abc", "/items/0", "/items/-1", "/items/1x", "/items/%201",
                     "/items/99999999999999999999999"]:
            with self.subTest(path=path):
                self.assert_json_error(self.ex.request("GET", path), 400,
                                       "id must be a positive integer")
                self.assert_json_error(self.ex.request("DELETE", path), 400,
                                       "id must be a positive integer")
        self.assert_json_error(self.ex.request("GET", "/items/987654321"), 404, "no such item")

    def test_the_router_answers_405_with_allow(self):
        status, headers, _ = self.ex.request("PUT", "/items", body=b"{}")
        self.assertEqual(status, 405)
        self.assertEqual(headers["allow"], "GET, HEAD, POST")
        status, headers, _ = self.ex.request("PATCH", "/items/1", body=b"{}")
        self.assertEqual(status, 405)
        self.assertEqual(headers["allow"], "GET, HEAD, DELETE")
        self.assertEqual(self.ex.request("GET", "/other")[0], 404)

    def test_a_body_over_64_kib_is_413_before_the_handler(self):
        body = json.dumps({"title": "x", "pad": "y" * (64 * 1024)})
        self.assertEqual(self.post(body)[0], 413)
        self.assertEqual(self.ex.request("GET", "/items")[0], 200)  # still serving

    def test_deeply_nested_json_is_rejected_without_harm(self):
        # nlohmann's parser keeps its own stack (not the green thread's 256 KiB one): a body of
        # 60,000 '[' is a plain 400, and the server goes on serving.
        for body, message in [(b"[" * 60000, "body is not valid JSON"),
                              (b"[" * 30000 + b"]" * 30000, "body must be a JSON object"),
                              (b'{"a":' * 10000 + b"1" + b"}" * 10000, "missing field: title")]:
            self.assert_json_error(self.post(body), 400, message)
        self.assertEqual(self.post({"title": "after"})[0], 201)

    def test_concurrent_writers_get_distinct_ids(self):
        # Sixteen clients, each on its own connection and so its own green thread, POST at
        # once: the green::Mutex around the store gives every item its own id.
        ids, errors = [], []
        lock = threading.Lock()

        def writer(n):
            c = self.ex.conn()
            try:
                for i in range(25):
                    c.request("POST", "/items", body=json.dumps({"title": "w%d-%d" % (n, i)}))
                    r = c.getresponse()
                    body = r.read()
                    with lock:
                        if r.status != 201:
                            errors.append((r.status, body))
                        else:
                            ids.append(json.loads(body)["id"])
            finally:
                c.close()

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(len(ids), 400)
        self.assertEqual(len(set(ids)), 400)
        listed = {item["id"] for item in self.ex.get_json("/items")}
        self.assertTrue(set(ids) <= listed)


if __name__ == "__main__":
    BINARY = sys.argv.pop(1)
    unittest.main(verbosity=2)
