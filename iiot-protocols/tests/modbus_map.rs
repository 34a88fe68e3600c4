//! The register map examples in `docs/` load, agree with each other, and survive a
//! serde round trip (issue 6).

use iiot_protocols::modbus::{Area, ByteOrder, DataType, MapConfig, RegisterMap};

const TOML: &str = include_str!("../../docs/modbus-map.toml");
const JSON: &str = include_str!("../../docs/modbus-map.json");

#[test]
fn toml_and_json_examples_load_and_agree() {
    let a = RegisterMap::from_toml_str(TOML).unwrap();
    let b = RegisterMap::from_json_str(JSON).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.tags().len(), 7);
    let (_, level) = a.find("tank1/level").unwrap();
    assert_eq!((level.area, level.address), (Area::HoldingRegister, 0));
    assert_eq!(level.order, ByteOrder::Cdab);
    let (_, energy) = a.find("meter/energy").unwrap();
    assert_eq!(
        (energy.address, energy.data_type, energy.order),
        (100, DataType::U64, ByteOrder::Dcba)
    );
    let (_, serial) = a.find("meter/serial").unwrap();
    assert_eq!((serial.address, serial.width), (200, 6));
}

#[test]
fn config_round_trips_through_toml_and_json() {
    let cfg: MapConfig = toml::from_str(TOML).unwrap();
    let again: MapConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(cfg, again);
    let again: MapConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(cfg, again);
}

#[test]
fn errors_name_the_tag_in_json_too() {
    let e = RegisterMap::from_json_str(
        r#"{"tags":[{"name":"boiler/pressure","address":"40001","type":"f32","order":"CDAB","bit":2}]}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("boiler/pressure"), "{e}");
}

#[test]
fn poller_settings_example_loads_with_documented_defaults() {
    use iiot_protocols::modbus::{PollerConfig, TransportConfig};
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        transport: TransportConfig,
        poller: PollerConfig,
    }
    let f: File = toml::from_str(include_str!("../../docs/modbus-poller.toml")).unwrap();
    assert_eq!(f.poller, PollerConfig::default());
    assert_eq!(
        f.transport,
        TransportConfig::Tcp {
            host: "192.168.1.20".into(),
            port: 502
        }
    );
    let rtu: TransportConfig = toml::from_str(
        "[rtu]\npath = \"/dev/ttyUSB1\"\nbaud = 19200\nparity = \"none\"\nstop_bits = \"two\"\n",
    )
    .unwrap();
    let TransportConfig::Rtu(cfg) = rtu else {
        panic!("{rtu:?}")
    };
    assert_eq!(cfg.baud, 19200);
    assert_eq!(cfg.bits_per_char(), 11);
}
