//! Shared test helpers.

#![allow(dead_code, unreachable_pub)]

pub mod modbus;
pub mod modbus_rtu;
pub mod opcua;
