from perfray.config import Workload
from perfray.load.generator import LoadGenerator
from perfray.load.targets import SystemEndpoint
from perfray.sut.session import make_system
from perfray.systems_config import StoresSpec
from perfray.timing import process_clock


def test_generator_endpoints_and_clients_share_one_clock_anchor():
    """Stamps from the generator (intended/sent), the endpoint (client sent/done) and the HTTP client (reply
    arrival) are subtracted from one another: one anchor per process, or a wall-clock step between two
    constructions would bias every latency."""
    system = make_system("http", Workload.model_validate({"system": "http"}), StoresSpec())
    endpoint = SystemEndpoint(system, 4)
    assert LoadGenerator(0).clock is process_clock() is endpoint.clock
    assert process_clock().offset_ns == process_clock().offset_ns
