//! Named OPC-UA status codes that drivers and gateways report, with their symbolic
//! names. Values are from OPC 10000-4 (StatusCode, §7.39) and OPC 10000-8 (Data
//! Access result codes, §7.3); the numeric list is the one published in OPC 10000-6.

use super::Quality;

impl Quality {
    /// `Good` (0x00000000): the value is good, no specific reason.
    pub const GOOD: Self = Self(0x0000_0000);
    /// `Good_Clamped` (0x00300000): the value written was accepted but clamped.
    pub const GOOD_CLAMPED: Self = Self(0x0030_0000);
    /// `Good_LocalOverride` (0x00960000): the value has been overridden locally.
    pub const GOOD_LOCAL_OVERRIDE: Self = Self(0x0096_0000);

    /// `Uncertain` (0x40000000): the value is uncertain, no specific reason.
    pub const UNCERTAIN: Self = Self(0x4000_0000);
    /// `Uncertain_NoCommunicationLastUsableValue` (0x408F0000): communication with
    /// the data source failed; the value is the last one that had good quality.
    pub const UNCERTAIN_NO_COMMUNICATION_LAST_USABLE_VALUE: Self = Self(0x408F_0000);
    /// `Uncertain_LastUsableValue` (0x40900000): whatever was updating this value
    /// has stopped doing so.
    pub const UNCERTAIN_LAST_USABLE_VALUE: Self = Self(0x4090_0000);
    /// `Uncertain_SubstituteValue` (0x40910000): the value is an operational value
    /// that was manually overwritten.
    pub const UNCERTAIN_SUBSTITUTE_VALUE: Self = Self(0x4091_0000);
    /// `Uncertain_InitialValue` (0x40920000): the value is an initial value for a
    /// variable that normally receives its value from another variable.
    pub const UNCERTAIN_INITIAL_VALUE: Self = Self(0x4092_0000);
    /// `Uncertain_SensorNotAccurate` (0x40930000): the value is at one of the sensor
    /// limits.
    pub const UNCERTAIN_SENSOR_NOT_ACCURATE: Self = Self(0x4093_0000);
    /// `Uncertain_EngineeringUnitsExceeded` (0x40940000): the value is outside of the
    /// range defined for this parameter.
    pub const UNCERTAIN_ENGINEERING_UNITS_EXCEEDED: Self = Self(0x4094_0000);
    /// `Uncertain_SubNormal` (0x40950000): the value is derived from multiple sources
    /// and fewer than the required number are Good.
    pub const UNCERTAIN_SUB_NORMAL: Self = Self(0x4095_0000);

    /// `Bad` (0x80000000): the value is bad, no specific reason.
    pub const BAD: Self = Self(0x8000_0000);
    /// `Bad_UnexpectedError` (0x80010000): an unexpected error occurred.
    pub const BAD_UNEXPECTED_ERROR: Self = Self(0x8001_0000);
    /// `Bad_InternalError` (0x80020000): an internal error occurred as a result of a
    /// programming or configuration error.
    pub const BAD_INTERNAL_ERROR: Self = Self(0x8002_0000);
    /// `Bad_CommunicationError` (0x80050000): a low level communication error occurred.
    pub const BAD_COMMUNICATION_ERROR: Self = Self(0x8005_0000);
    /// `Bad_DecodingError` (0x80070000): decoding halted because of invalid data.
    pub const BAD_DECODING_ERROR: Self = Self(0x8007_0000);
    /// `Bad_Timeout` (0x800A0000): the operation timed out.
    pub const BAD_TIMEOUT: Self = Self(0x800A_0000);
    /// `Bad_ServerNotConnected` (0x800D0000): the client is not connected to the server.
    pub const BAD_SERVER_NOT_CONNECTED: Self = Self(0x800D_0000);
    /// `Bad_NoCommunication` (0x80310000): communication with the data source is
    /// defined, but not established, and there is no last known value available.
    pub const BAD_NO_COMMUNICATION: Self = Self(0x8031_0000);
    /// `Bad_WaitingForInitialData` (0x80320000): waiting for the server to obtain
    /// values from the underlying data source.
    pub const BAD_WAITING_FOR_INITIAL_DATA: Self = Self(0x8032_0000);
    /// `Bad_NodeIdUnknown` (0x80340000): the node id refers to a node that does not
    /// exist.
    pub const BAD_NODE_ID_UNKNOWN: Self = Self(0x8034_0000);
    /// `Bad_NotReadable` (0x803A0000): the access level does not allow reading.
    pub const BAD_NOT_READABLE: Self = Self(0x803A_0000);
    /// `Bad_NotWritable` (0x803B0000): the access level does not allow writing.
    pub const BAD_NOT_WRITABLE: Self = Self(0x803B_0000);
    /// `Bad_OutOfRange` (0x803C0000): the value was out of range.
    pub const BAD_OUT_OF_RANGE: Self = Self(0x803C_0000);
    /// `Bad_NotSupported` (0x803D0000): the requested operation is not supported.
    pub const BAD_NOT_SUPPORTED: Self = Self(0x803D_0000);
    /// `Bad_TypeMismatch` (0x80740000): the value supplied is not of the expected type.
    pub const BAD_TYPE_MISMATCH: Self = Self(0x8074_0000);
    /// `Bad_ConfigurationError` (0x80890000): a configuration problem affects the
    /// usefulness of the value.
    pub const BAD_CONFIGURATION_ERROR: Self = Self(0x8089_0000);
    /// `Bad_NotConnected` (0x808A0000): the variable should receive its value from a
    /// data source but has never been configured to do so.
    pub const BAD_NOT_CONNECTED: Self = Self(0x808A_0000);
    /// `Bad_DeviceFailure` (0x808B0000): the device or data source that generates the
    /// value failed.
    pub const BAD_DEVICE_FAILURE: Self = Self(0x808B_0000);
    /// `Bad_SensorFailure` (0x808C0000): the sensor from which the value is derived
    /// failed.
    pub const BAD_SENSOR_FAILURE: Self = Self(0x808C_0000);
    /// `Bad_OutOfService` (0x808D0000): the source of the data is not operational.
    pub const BAD_OUT_OF_SERVICE: Self = Self(0x808D_0000);
}

/// Every named code with its OPC-UA symbolic name, in numeric order.
pub(super) const NAMED: &[(Quality, &str)] = &[
    (Quality::GOOD, "Good"),
    (Quality::GOOD_CLAMPED, "Good_Clamped"),
    (Quality::GOOD_LOCAL_OVERRIDE, "Good_LocalOverride"),
    (Quality::UNCERTAIN, "Uncertain"),
    (
        Quality::UNCERTAIN_NO_COMMUNICATION_LAST_USABLE_VALUE,
        "Uncertain_NoCommunicationLastUsableValue",
    ),
    (
        Quality::UNCERTAIN_LAST_USABLE_VALUE,
        "Uncertain_LastUsableValue",
    ),
    (
        Quality::UNCERTAIN_SUBSTITUTE_VALUE,
        "Uncertain_SubstituteValue",
    ),
    (Quality::UNCERTAIN_INITIAL_VALUE, "Uncertain_InitialValue"),
    (
        Quality::UNCERTAIN_SENSOR_NOT_ACCURATE,
        "Uncertain_SensorNotAccurate",
    ),
    (
        Quality::UNCERTAIN_ENGINEERING_UNITS_EXCEEDED,
        "Uncertain_EngineeringUnitsExceeded",
    ),
    (Quality::UNCERTAIN_SUB_NORMAL, "Uncertain_SubNormal"),
    (Quality::BAD, "Bad"),
    (Quality::BAD_UNEXPECTED_ERROR, "Bad_UnexpectedError"),
    (Quality::BAD_INTERNAL_ERROR, "Bad_InternalError"),
    (Quality::BAD_COMMUNICATION_ERROR, "Bad_CommunicationError"),
    (Quality::BAD_DECODING_ERROR, "Bad_DecodingError"),
    (Quality::BAD_TIMEOUT, "Bad_Timeout"),
    (Quality::BAD_SERVER_NOT_CONNECTED, "Bad_ServerNotConnected"),
    (Quality::BAD_NO_COMMUNICATION, "Bad_NoCommunication"),
    (
        Quality::BAD_WAITING_FOR_INITIAL_DATA,
        "Bad_WaitingForInitialData",
    ),
    (Quality::BAD_NODE_ID_UNKNOWN, "Bad_NodeIdUnknown"),
    (Quality::BAD_NOT_READABLE, "Bad_NotReadable"),
    (Quality::BAD_NOT_WRITABLE, "Bad_NotWritable"),
    (Quality::BAD_OUT_OF_RANGE, "Bad_OutOfRange"),
    (Quality::BAD_NOT_SUPPORTED, "Bad_NotSupported"),
    (Quality::BAD_TYPE_MISMATCH, "Bad_TypeMismatch"),
    (Quality::BAD_CONFIGURATION_ERROR, "Bad_ConfigurationError"),
    (Quality::BAD_NOT_CONNECTED, "Bad_NotConnected"),
    (Quality::BAD_DEVICE_FAILURE, "Bad_DeviceFailure"),
    (Quality::BAD_SENSOR_FAILURE, "Bad_SensorFailure"),
    (Quality::BAD_OUT_OF_SERVICE, "Bad_OutOfService"),
];

/// The symbolic name of a code (flag bits already stripped), if it is one we name.
pub(super) fn name_of(code: u32) -> Option<&'static str> {
    NAMED
        .iter()
        .find(|(q, _)| q.0 == code)
        .map(|(_, name)| *name)
}
