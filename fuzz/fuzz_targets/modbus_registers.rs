//! Register words come from field devices: decoding them for every tag of a
//! map, in every type and byte order the map uses, never panics. Map files are
//! parsed from arbitrary text too (a broken config must be an error, not a crash).
#![no_main]

use iiot_protocols::modbus::RegisterMap;
use iiot_protocols::modbus::codec::decode_registers;
use libfuzzer_sys::fuzz_target;

const MAP: &str = include_str!("../../docs/modbus-map.toml");

fuzz_target!(|data: &[u8]| {
    let map = RegisterMap::from_toml_str(MAP).expect("the documented map loads");
    let words: Vec<u16> = data
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
        .collect();
    for tag in map.tags() {
        let _ = decode_registers(tag, &words);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = RegisterMap::from_json_str(text);
        let _ = RegisterMap::from_toml_str(text);
    }
});
