"""The protocol version: the single source of truth both sides import.

Bump PROTOCOL_VERSION on every change to what travels on the wire and add a line
to CHANGELOG below. The handshake refuses any client whose version differs.
"""

PROTOCOL_VERSION = 3

CHANGELOG: dict[int, str] = {
    1: (
        "First version: msgpack envelope {v, kind, id, job, body, arrays} in frame 0, "
        "one extra frame per numpy array; kinds hello, plugins, submit, accepted, progress, "
        "result, done, failed, cancel, cancelled, jobs, fetch, release, released, ping, pong, error."
    ),
    2: (
        "submit carries `client`, the client's own notes on the job; the backend stores them with the job and "
        "gives them back in each `jobs` row, so a job fetched in a later session is applied as it was asked for."
    ),
    3: (
        "progress carries `warning`: something the user should keep seeing while and after the job runs (a dense "
        "mesh fitted on the CPU, a video whose object does not move); `jobs` rows carry the job's `warnings`."
    ),
}
