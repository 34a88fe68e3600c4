//! The OTA agent: manifests in, statuses out, the slots in between.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use iiot_core::codec::protobuf;
use iiot_core::command::{Delivery, Inbox};
use iiot_core::ota::ImageFetch;
use iiot_core::publish::OutboundMessage;
use iiot_core::topic::UnsPath;
use iiot_core::types::{ManifestBody, OtaReason, OtaState, OtaStatus, Timestamp};
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::download::{DownloadEnd, download};
use super::slots::{BootEvent, ImageInfo, SlotBackend, SlotError, write_atomic};
use super::trust::TrustStore;
use super::verify::{DeviceFacts, Rejection, VerifiedManifest, verify_manifest};
use super::{Health, HealthCheck, OtaConfig, blocking, hex};
use crate::runtime::ControlLane;

const RECORD_FILE: &str = "update.json";

/// What the agent has persisted besides the slots: the manifest being worked on
/// and the digest of the last manifest handled (a retained manifest delivered
/// again on every connect is then acknowledged without a second status).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<Pending>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Pending {
    /// The signed manifest as received, base64.
    manifest: String,
    digest: String,
    firmware_id: String,
    version: String,
    #[serde(with = "super::hex32_serde")]
    sha256: [u8; 32],
    phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    /// Being written to the writable slot.
    Downloading,
    /// Marked for trial (or on trial).
    Trial,
}

/// Where the agent is, for observers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentState {
    /// The last state reported.
    pub state: OtaState,
    /// The version running now.
    pub running: Option<semver::Version>,
    /// The update the last state is about (firmware id, version).
    pub update: Option<(String, String)>,
    /// The reason of the last rejection, failure or roll back.
    pub reason: Option<OtaReason>,
    /// Set once the agent needs the device to reboot (into a trial or back
    /// from one); it does nothing more until then.
    pub reboot_required: bool,
}

/// Observes a running agent. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OtaHandle {
    state: watch::Receiver<AgentState>,
}

impl OtaHandle {
    /// The agent's state now.
    pub fn state(&self) -> AgentState {
        self.state.borrow().clone()
    }

    /// Waits until the agent needs a reboot (returns at once if it does already).
    /// What a reboot is belongs to the application: `systemctl reboot` on a
    /// device, a restart of the gateway process (or of the agent) otherwise.
    pub async fn reboot_required(&self) {
        let mut rx = self.state.clone();
        let _ = rx.wait_for(|s| s.reboot_required).await;
    }

    /// Waits until `f` holds for the state.
    pub async fn wait_for(&self, f: impl FnMut(&AgentState) -> bool) -> AgentState {
        let mut rx = self.state.clone();
        match rx.wait_for(f).await {
            Ok(s) => s.clone(),
            Err(_) => self.state(),
        }
    }
}

/// The OTA agent of one device: takes signed manifests from an [`Inbox`] (the
/// MQTT session's manual-ack deliveries on `ota/notification`), verifies them
/// against its [`TrustStore`], downloads the image into the writable slot
/// through an [`ImageFetch`], marks it for trial, runs the application's
/// [`HealthCheck`] on the trial boot and confirms or rolls back. Every step goes
/// upstream as an [`OtaStatus`] on `ota/status` through the control lane.
///
/// A manifest is acknowledged to the transport only once it is durably
/// recorded (or rejected): a crash before that gets it delivered again.
pub struct OtaAgent<B, F, H> {
    path: UnsPath,
    dir: PathBuf,
    backend: Arc<Mutex<B>>,
    fetch: Arc<F>,
    health: Arc<H>,
    trust: TrustStore,
    control: ControlLane,
    config: OtaConfig,
    record: Record,
    state: watch::Sender<AgentState>,
}

impl<B, F, H> std::fmt::Debug for OtaAgent<B, F, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtaAgent")
            .field("path", &self.path.to_string())
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The agent could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The slots failed.
    #[error(transparent)]
    Slots(#[from] SlotError),
    /// The agent's record cannot be read.
    #[error("OTA record {path}: {reason}")]
    Record {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

enum Job {
    Download {
        task: JoinHandle<Result<ImageInfo, DownloadEnd>>,
        cancel: CancellationToken,
        body: ManifestBody,
        /// Publishes the download's progress statuses; ends after the download.
        progress: JoinHandle<()>,
    },
    Health {
        task: JoinHandle<Result<(), Rejection>>,
        cancel: CancellationToken,
    },
}

/// Everything an [`OtaAgent`] needs besides its device path and control lane,
/// with its record read: what [`crate::runtime::GatewayBuilder::ota`] takes.
pub struct OtaSetup<B, F, H> {
    dir: PathBuf,
    backend: B,
    fetch: F,
    health: H,
    trust: TrustStore,
    config: OtaConfig,
    record: Record,
}

impl<B, F, H> std::fmt::Debug for OtaSetup<B, F, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtaSetup")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<B: SlotBackend, F: ImageFetch, H: HealthCheck> OtaSetup<B, F, H> {
    /// Reads the agent's record in `dir` (created when new): `backend` holds the
    /// slots, `fetch` gets images, `health` judges a trial boot, `trust` says
    /// who may sign.
    ///
    /// # Errors
    /// [`AgentError`] when `dir` or its record cannot be read.
    pub fn open(
        dir: impl AsRef<Path>,
        backend: B,
        fetch: F,
        health: H,
        trust: TrustStore,
        config: OtaConfig,
    ) -> Result<Self, AgentError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| AgentError::Record {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        let file = dir.join(RECORD_FILE);
        let record = match std::fs::read(&file) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| AgentError::Record {
                path: file.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Record::default(),
            Err(e) => {
                return Err(AgentError::Record {
                    path: file,
                    reason: e.to_string(),
                });
            }
        };
        Ok(Self {
            dir,
            backend,
            fetch,
            health,
            trust,
            config,
            record,
        })
    }
}

impl<B: SlotBackend, F: ImageFetch, H: HealthCheck> OtaAgent<B, F, H> {
    /// The agent of the device at `path`, reporting on `control`.
    pub fn new(path: UnsPath, setup: OtaSetup<B, F, H>, control: ControlLane) -> (OtaHandle, Self) {
        let running = setup
            .backend
            .state()
            .running_image()
            .map(|i| i.version.clone());
        let (tx, rx) = watch::channel(AgentState {
            state: OtaState::Idle,
            running,
            update: None,
            reason: None,
            reboot_required: false,
        });
        (
            OtaHandle { state: rx },
            Self {
                path,
                dir: setup.dir,
                backend: Arc::new(Mutex::new(setup.backend)),
                fetch: Arc::new(setup.fetch),
                health: Arc::new(setup.health),
                trust: setup.trust,
                control,
                config: setup.config,
                record: setup.record,
                state: tx,
            },
        )
    }

    /// Runs until `cancel` or the inbox closes: first the boot (count a trial
    /// boot, resume what a restart interrupted), then manifests.
    pub async fn run<I: Inbox>(mut self, mut inbox: I, cancel: CancellationToken) {
        let mut job = self.boot().await;
        loop {
            if self.state.borrow().reboot_required {
                // Nothing more until the reboot; manifests stay unacknowledged
                // and come again after it.
                cancel.cancelled().await;
                return;
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                d = inbox.recv() => match d {
                    Some(d) => job = self.on_delivery(d, job).await,
                    None => break,
                },
                r = wait_job(&mut job) => {
                    if let Some(j) = job.take() {
                        j.finished().await;
                    }
                    self.on_job_end(r).await;
                }
            }
        }
        if let Some(j) = job {
            j.stop().await;
        }
    }

    fn facts(&self) -> DeviceFacts {
        let b = lock(&self.backend);
        let s = b.state();
        DeviceFacts {
            device_type: self.config.device_type.clone(),
            hw_revision: self.config.hw_revision,
            running: s
                .running_image()
                .map_or_else(|| semver::Version::new(0, 0, 0), |i| i.version.clone()),
            min_version: s.min_version.clone(),
            free_space: b.capacity(),
        }
    }

    async fn boot(&mut self) -> Option<Job> {
        let event = match blocking(&self.backend, SlotBackend::boot).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "ota: the slots cannot boot");
                return None;
            }
        };
        let state = lock(&self.backend).state().clone();
        self.state
            .send_modify(|s| s.running = state.running_image().map(|i| i.version.clone()));
        if let BootEvent::FellBack { image } = &event {
            let (fw, v) = image
                .as_ref()
                .map(|i| (i.firmware_id.clone(), i.version.to_string()))
                .or_else(|| self.pending_ids())
                .unwrap_or_default();
            self.report(
                OtaState::RolledBack,
                &fw,
                &v,
                Some(OtaReason::BootLimit),
                Some("the trial slot used up its boots; the boot loader fell back".into()),
                None,
            )
            .await;
            self.clear_pending().await;
        }
        if let Some(t) = &state.trial {
            let img = state.image(t.slot).cloned();
            let (fw, v) = img
                .as_ref()
                .map(|i| (i.firmware_id.clone(), i.version.to_string()))
                .unwrap_or_default();
            if Timestamp::now() >= t.confirm_by {
                self.roll_back(
                    &fw,
                    &v,
                    OtaReason::ConfirmDeadline,
                    "not confirmed in time".into(),
                )
                .await;
                return None;
            }
            if let BootEvent::Trial { boots } = event {
                self.report(
                    OtaState::TrialBoot,
                    &fw,
                    &v,
                    None,
                    Some(format!("boot {boots} of {}", t.max_boots)),
                    None,
                )
                .await;
            }
            return Some(self.start_health(t.confirm_by));
        }
        // No trial runs.
        let pending = self.record.pending.clone()?;
        // The active slot holds the update: confirmed, whatever the phase says (a
        // crash between marking the slot for trial and recording that leaves
        // `Downloading`; the manifest would then be refused as not newer).
        let confirmed = state
            .image(state.active)
            .is_some_and(|i| i.sha256 == pending.sha256);
        match pending.phase {
            _ if confirmed => {
                self.report(
                    OtaState::Confirmed,
                    &pending.firmware_id,
                    &pending.version,
                    None,
                    None,
                    None,
                )
                .await;
                self.clear_pending().await;
                None
            }
            Phase::Trial => {
                // The trial ended while we were down: rolled back.
                self.report(
                    OtaState::RolledBack,
                    &pending.firmware_id,
                    &pending.version,
                    Some(OtaReason::BootLimit),
                    None,
                    None,
                )
                .await;
                self.clear_pending().await;
                None
            }
            Phase::Downloading => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(&pending.manifest)
                    .unwrap_or_default();
                // Checked again: keys may have been revoked, the manifest expired.
                match verify_manifest(
                    &raw,
                    &self.trust,
                    &self.facts(),
                    self.config.max_manifest_bytes,
                    Timestamp::now(),
                ) {
                    Ok(v) => Some(self.start_download(v.body)),
                    Err(r) => {
                        let _ = blocking(&self.backend, |b| b.truncate(0)).await;
                        self.report(
                            OtaState::Rejected,
                            &pending.firmware_id,
                            &pending.version,
                            Some(r.reason),
                            Some(r.detail),
                            None,
                        )
                        .await;
                        self.clear_pending().await;
                        None
                    }
                }
            }
        }
    }

    fn pending_ids(&self) -> Option<(String, String)> {
        self.record
            .pending
            .as_ref()
            .map(|p| (p.firmware_id.clone(), p.version.clone()))
    }

    async fn on_delivery<A: iiot_core::command::Acknowledge>(
        &mut self,
        d: Delivery<A>,
        job: Option<Job>,
    ) -> Option<Job> {
        let expected = self.path.ota_notification().to_string();
        if d.topic != expected {
            tracing::warn!(topic = %d.topic, expected = %expected, "ota: a manifest on another topic; ignored");
            ack(d.ack).await;
            return job;
        }
        let digest = hex(&Sha256::digest(&d.payload).into());
        let same_pending = self
            .record
            .pending
            .as_ref()
            .is_some_and(|p| p.digest == digest);
        if same_pending || self.record.last_digest.as_deref() == Some(digest.as_str()) {
            tracing::debug!("ota: a manifest handled before; acknowledged");
            ack(d.ack).await;
            return job;
        }
        let verified = verify_manifest(
            &d.payload,
            &self.trust,
            &self.facts(),
            self.config.max_manifest_bytes,
            Timestamp::now(),
        );
        let v = match verified {
            Ok(v) => v,
            Err(r) => {
                let (fw, ver) = peek_ids(&d.payload);
                tracing::warn!(reason = %r.reason, detail = %r.detail, "ota: manifest rejected");
                self.record.last_digest = Some(digest);
                if self.save().await.is_ok() {
                    ack(d.ack).await;
                }
                self.report(
                    OtaState::Rejected,
                    &fw,
                    &ver,
                    Some(r.reason),
                    Some(r.detail),
                    None,
                )
                .await;
                return job;
            }
        };
        let (fw, ver) = (v.body.firmware_id.clone(), v.body.version.to_string());
        if matches!(job, Some(Job::Health { .. })) || lock(&self.backend).state().trial.is_some() {
            // Not remembered as handled: the same manifest sent again after the
            // trial must be taken then.
            ack(d.ack).await;
            self.report(
                OtaState::Rejected,
                &fw,
                &ver,
                Some(OtaReason::Busy),
                Some(
                    "a trial runs; send the update again once it is confirmed or rolled back"
                        .into(),
                ),
                None,
            )
            .await;
            return job;
        }
        // A new update: the one in progress (if any) gives way.
        if let Some(j) = job {
            j.stop().await;
            if let Some((ofw, over)) = self.pending_ids() {
                self.report(
                    OtaState::Failed,
                    &ofw,
                    &over,
                    Some(OtaReason::Superseded),
                    Some(format!("replaced by {fw} {ver}")),
                    None,
                )
                .await;
            }
        }
        if let Err(e) = blocking(&self.backend, |b| b.truncate(0)).await {
            tracing::error!(error = %e, "ota: cannot empty the writable slot; the manifest comes again");
            self.report(
                OtaState::Failed,
                &fw,
                &ver,
                Some(OtaReason::StorageFailed),
                Some(e.to_string()),
                None,
            )
            .await;
            return None;
        }
        self.record.pending = Some(pending_of(&v, digest.clone()));
        self.record.last_digest = Some(digest);
        if let Err(e) = self.save().await {
            tracing::error!(error = %e, "ota: cannot record the manifest; not acknowledged, it comes again");
            self.record.pending = None;
            return None;
        }
        ack(d.ack).await;
        tracing::info!(firmware = %fw, version = %ver, signed_by = ?v.signed_by, "ota: manifest accepted");
        Some(self.start_download(v.body))
    }

    fn start_download(&self, body: ManifestBody) -> Job {
        let cancel = CancellationToken::new();
        let control = self.control.clone();
        let device = self.path.device_id().clone();
        let topic = self.path.ota_status().to_string();
        let (fw, ver) = (body.firmware_id.clone(), body.version.to_string());
        let running = self
            .state
            .borrow()
            .running
            .as_ref()
            .map(ToString::to_string);
        let tx = self.state.clone();
        tx.send_modify(|s| {
            s.state = OtaState::Downloading;
            s.update = Some((fw.clone(), ver.clone()));
            s.reason = None;
        });
        // Progress statuses are published in order by one task, so a slow
        // control lane never holds the download back.
        let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let progress: super::download::Progress = Box::new(move |done| {
            let _ = ptx.send(done);
        });
        let progress_task = tokio::spawn(async move {
            while let Some(done) = prx.recv().await {
                let s = OtaStatus {
                    device_id: device.clone(),
                    firmware_id: fw.clone(),
                    version: ver.clone(),
                    state: OtaState::Downloading,
                    time: Timestamp::now(),
                    detail: None,
                    bytes_done: Some(done),
                    reason: None,
                    running_version: running.clone(),
                };
                let m = OutboundMessage::new(topic.clone(), protobuf::encode_ota_status(&s));
                if let Err(e) = control.publish(m).await {
                    tracing::warn!(error = %e, "ota: progress status not recorded");
                }
            }
        });
        let task = tokio::spawn(download(
            self.backend.clone(),
            self.fetch.clone(),
            body.clone(),
            self.config.clone(),
            progress,
            cancel.clone(),
        ));
        Job::Download {
            task,
            cancel,
            body,
            progress: progress_task,
        }
    }

    fn start_health(&self, confirm_by: Timestamp) -> Job {
        let cancel = CancellationToken::new();
        let health = self.health.clone();
        let interval = self.config.health_interval;
        let c = cancel.clone();
        self.state.send_modify(|s| s.state = OtaState::TrialBoot);
        let task = tokio::spawn(async move {
            loop {
                let left = confirm_by.duration_since(Timestamp::now());
                if left.is_zero() {
                    return Err(Rejection::new(
                        OtaReason::ConfirmDeadline,
                        "not confirmed in time",
                    ));
                }
                let r = tokio::select! {
                    () = c.cancelled() => return Ok(()),
                    r = tokio::time::timeout(left, health.check()) => r,
                };
                match r {
                    Ok(Health::Healthy) => return Ok(()),
                    Ok(Health::Failed(why)) => {
                        return Err(Rejection::new(OtaReason::HealthCheckFailed, why));
                    }
                    Ok(Health::NotYet(why)) => tracing::info!(why, "ota: trial not healthy yet"),
                    Err(_) => {
                        return Err(Rejection::new(
                            OtaReason::ConfirmDeadline,
                            "not confirmed in time",
                        ));
                    }
                }
                tokio::select! {
                    () = c.cancelled() => return Ok(()),
                    () = tokio::time::sleep(interval.min(left)) => {}
                }
            }
        });
        Job::Health { task, cancel }
    }

    async fn on_job_end(&mut self, end: JobEnd) {
        match end {
            JobEnd::Downloaded(Ok(info), body) => self.install(info, &body).await,
            JobEnd::Downloaded(Err(DownloadEnd::Cancelled), _) => {}
            JobEnd::Downloaded(Err(DownloadEnd::Refused(r)), body) => {
                let state = if r.reason.is_rejection() {
                    OtaState::Rejected
                } else {
                    OtaState::Failed
                };
                tracing::warn!(reason = %r.reason, detail = %r.detail, "ota: download ended");
                self.report(
                    state,
                    &body.firmware_id,
                    &body.version.to_string(),
                    Some(r.reason),
                    Some(r.detail),
                    None,
                )
                .await;
                self.clear_pending().await;
            }
            JobEnd::Health(r) => {
                let (fw, v) = lock(&self.backend)
                    .state()
                    .running_image()
                    .map(|i| (i.firmware_id.clone(), i.version.to_string()))
                    .unwrap_or_default();
                match r {
                    Ok(()) => self.confirm(&fw, &v).await,
                    Err(rej) => self.roll_back(&fw, &v, rej.reason, rej.detail).await,
                }
            }
            JobEnd::Panicked(what) => {
                tracing::error!(what, "ota: a task of the agent panicked");
            }
        }
    }

    async fn install(&mut self, info: ImageInfo, body: &ManifestBody) {
        let (fw, v) = (body.firmware_id.clone(), body.version.to_string());
        self.report(OtaState::Verifying, &fw, &v, None, None, Some(info.size))
            .await;
        let now = Timestamp::now();
        let confirm_by = now.saturating_add(self.config.confirm_within);
        let max_boots = self.config.max_boots;
        let marked = blocking(&self.backend, move |b| {
            b.mark_for_trial(info, max_boots, now, confirm_by)
        })
        .await;
        if let Err(e) = marked {
            tracing::error!(error = %e, "ota: cannot mark the slot for trial");
            let _ = blocking(&self.backend, |b| b.truncate(0)).await;
            self.report(
                OtaState::Failed,
                &fw,
                &v,
                Some(OtaReason::StorageFailed),
                Some(e.to_string()),
                None,
            )
            .await;
            self.clear_pending().await;
            return;
        }
        if let Some(p) = &mut self.record.pending {
            p.phase = Phase::Trial;
        }
        let _ = self.save().await;
        self.report(
            OtaState::Installed,
            &fw,
            &v,
            None,
            Some("marked for trial; reboot to run it".into()),
            Some(body.size),
        )
        .await;
        self.state.send_modify(|s| s.reboot_required = true);
    }

    async fn confirm(&mut self, fw: &str, v: &str) {
        match blocking(&self.backend, SlotBackend::confirm).await {
            Ok(()) => {
                let running = lock(&self.backend)
                    .state()
                    .running_image()
                    .map(|i| i.version.clone());
                self.state.send_modify(|s| s.running = running);
                tracing::info!(firmware = fw, version = v, "ota: trial confirmed");
                // In the control lane before the record forgets the update: a
                // crash in between reports it again on the next boot (the lane
                // delivers at least once anyway), never not at all.
                self.report(OtaState::Confirmed, fw, v, None, None, None)
                    .await;
                self.clear_pending().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "ota: cannot confirm the trial");
                self.roll_back(fw, v, OtaReason::StorageFailed, e.to_string())
                    .await;
            }
        }
    }

    async fn roll_back(&mut self, fw: &str, v: &str, reason: OtaReason, detail: String) {
        if let Err(e) = blocking(&self.backend, SlotBackend::roll_back).await {
            // The boot loader falls back on its own once the boots run out.
            tracing::error!(error = %e, "ota: cannot roll back");
        }
        tracing::warn!(firmware = fw, version = v, %reason, detail, "ota: trial rolled back");
        self.report(
            OtaState::RolledBack,
            fw,
            v,
            Some(reason),
            Some(detail),
            None,
        )
        .await;
        self.clear_pending().await;
        self.state.send_modify(|s| s.reboot_required = true);
    }

    async fn clear_pending(&mut self) {
        if self.record.pending.take().is_some()
            && let Err(e) = self.save().await
        {
            tracing::error!(error = %e, "ota: cannot update the record");
        }
    }

    async fn save(&self) -> Result<(), SlotError> {
        let dir = self.dir.clone();
        let bytes = serde_json::to_vec_pretty(&self.record).unwrap_or_default();
        tokio::task::spawn_blocking(move || write_atomic(&dir, RECORD_FILE, &bytes))
            .await
            .unwrap_or_else(|e| {
                Err(SlotError::State(if e.is_panic() {
                    "panicked"
                } else {
                    "cancelled"
                }))
            })
    }

    async fn report(
        &self,
        state: OtaState,
        firmware_id: &str,
        version: &str,
        reason: Option<OtaReason>,
        detail: Option<String>,
        bytes_done: Option<u64>,
    ) {
        let running = lock(&self.backend)
            .state()
            .running_image()
            .map(|i| i.version.to_string());
        let s = OtaStatus {
            device_id: self.path.device_id().clone(),
            firmware_id: firmware_id.to_owned(),
            version: version.to_owned(),
            state,
            time: Timestamp::now(),
            detail,
            bytes_done,
            reason,
            running_version: running,
        };
        self.state.send_modify(|a| {
            a.state = state;
            a.update = Some((firmware_id.to_owned(), version.to_owned()));
            if reason.is_some() {
                a.reason = reason;
            }
        });
        let m = OutboundMessage::new(
            self.path.ota_status().to_string(),
            protobuf::encode_ota_status(&s),
        );
        if let Err(e) = self.control.publish(m).await {
            tracing::warn!(error = %e, ?state, "ota: status not recorded");
        }
    }
}

enum JobEnd {
    Downloaded(Result<ImageInfo, DownloadEnd>, Box<ManifestBody>),
    Health(Result<(), Rejection>),
    Panicked(&'static str),
}

async fn wait_job(job: &mut Option<Job>) -> JobEnd {
    match job {
        None => std::future::pending().await,
        Some(Job::Download { task, body, .. }) => match task.await {
            Ok(r) => JobEnd::Downloaded(r, Box::new(body.clone())),
            Err(_) => JobEnd::Panicked("download"),
        },
        Some(Job::Health { task, .. }) => match task.await {
            Ok(r) => JobEnd::Health(r),
            Err(_) => JobEnd::Panicked("health check"),
        },
    }
}

impl Job {
    /// After its task ended: a download's last progress statuses go in the
    /// control lane before whatever is reported next (`Verifying`, a refusal).
    async fn finished(self) {
        if let Self::Download { progress, .. } = self {
            let _ = progress.await;
        }
    }

    /// Stops it. A download's progress statuses not yet in the control lane
    /// are dropped: none may follow what is reported next (`Superseded`).
    async fn stop(self) {
        match self {
            Self::Download {
                task,
                cancel,
                progress,
                ..
            } => {
                cancel.cancel();
                let _ = task.await;
                progress.abort();
                let _ = progress.await;
            }
            Self::Health { task, cancel } => {
                cancel.cancel();
                let _ = task.await;
            }
        }
    }
}

fn pending_of(v: &VerifiedManifest, digest: String) -> Pending {
    Pending {
        manifest: base64::engine::general_purpose::STANDARD.encode(&v.raw),
        digest,
        firmware_id: v.body.firmware_id.clone(),
        version: v.body.version.to_string(),
        sha256: v.body.sha256,
        phase: Phase::Downloading,
    }
}

/// Firmware id and version of a manifest that was refused, for its status, read
/// without trusting it (best effort; empty when unreadable).
fn peek_ids(raw: &Bytes) -> (String, String) {
    let limits = iiot_core::codec::Limits::default();
    protobuf::decode_signed_manifest(raw, &limits)
        .ok()
        .and_then(|m| protobuf::decode_manifest_body(&m.body, &limits).ok())
        .map(|b| (b.firmware_id, b.version.to_string()))
        .unwrap_or_default()
}

async fn ack<A: iiot_core::command::Acknowledge>(a: Option<A>) {
    if let Some(a) = a {
        a.ack().await;
    }
}

pub(crate) fn lock<B>(m: &Mutex<B>) -> std::sync::MutexGuard<'_, B> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
