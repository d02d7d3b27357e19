"""The tank controller reader: Modbus TCP through pymodbus, one request per variable."""

from __future__ import annotations

import struct
import threading

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from data_collector import CollectedVariables, ConfigurationError, DataReader, Quality, Variable

#: address kind -> the value type it reads
KINDS = {"level": "float", "count": "int", "alarm": "bool"}


class TankReader(DataReader):
    """Reads ``level:<register>`` (float32), ``count:<register>`` (uint16), ``alarm:<coil>``."""

    reader_type = "tank"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 502,
        *,
        unit: int = 1,
        timeout_s: float = 1.0,
        reader_type: str | None = None,
    ) -> None:
        super().__init__(reader_type=reader_type)
        self.host, self.port, self.unit, self.timeout_s = host, port, unit, timeout_s
        self._client: ModbusTcpClient | None = None
        self._lock = threading.Lock()

    def validate_variable(self, variable: Variable) -> None:
        self._parse(variable)

    @staticmethod
    def _parse(variable: Variable) -> tuple[str, int]:
        kind, _, number = variable.address.partition(":")
        if kind not in KINDS or not number.isdigit() or int(number) > 65534:
            raise ConfigurationError(
                f"variable {variable.id}: address {variable.address!r} is not level:<register>, "
                "count:<register> or alarm:<coil>"
            )
        if variable.value_type != KINDS[kind]:
            raise ConfigurationError(
                f"variable {variable.id}: address {variable.address!r} reads a {KINDS[kind]}, "
                f"not a {variable.value_type}"
            )
        return kind, int(number)

    def _connected(self) -> ModbusTcpClient:
        if self._client is None:
            client = ModbusTcpClient(self.host, port=self.port, timeout=self.timeout_s, retries=0)
            if not client.connect():  # type: ignore[no-untyped-call]  # (pymodbus leaves it untyped)
                client.close()  # type: ignore[no-untyped-call]
                raise ConnectionError(f"tank controller {self.host}:{self.port} does not accept connections")
            self._client = client
        return self._client

    def _disconnect(self) -> None:
        if self._client is not None:
            self._client.close()  # type: ignore[no-untyped-call]
            self._client = None

    def close(self) -> None:
        with self._lock:
            self._disconnect()

    def read(self, variables: CollectedVariables) -> None:
        down: str | None = None  # once the device failed, the rest of this read is BAD at once
        with self._lock:
            for item in variables:
                if down is not None:
                    item.set_bad(down)
                    continue
                kind, number = self._parse(item.variable)
                try:
                    client = self._connected()
                    if kind == "alarm":
                        response = client.read_coils(number, count=1, device_id=self.unit)
                    else:
                        count = 2 if kind == "level" else 1
                        response = client.read_holding_registers(number, count=count, device_id=self.unit)
                except (ModbusException, OSError) as exc:
                    self._disconnect()  # reconnect at the next read
                    down = f"tank controller unreachable: {type(exc).__name__}: {exc}"
                    item.set_bad(down)
                    continue
                if response.isError():
                    item.set_bad(f"tank controller refused {item.variable.address!r}: {response}")
                elif kind == "alarm":
                    item.value = bool(response.bits[0])
                    item.quality = Quality.GOOD
                elif kind == "level":
                    item.value = struct.unpack(">f", struct.pack(">2H", *response.registers))[0]
                    item.quality = Quality.GOOD
                else:
                    item.value = int(response.registers[0])
                    item.quality = Quality.GOOD
