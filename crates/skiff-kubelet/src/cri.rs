//! A CRI client over a Unix socket: the runtime and image services of
//! containerd (or any CRI runtime).

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Why talking to the runtime failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to the container runtime at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("container runtime: {0}")]
    Call(#[from] tonic::Status),
}

/// Where containerd's runc keeps the state of the `k8s.io` namespace's
/// containers, unless the runtime was started with a root of its own.
pub const DEFAULT_RUNC_ROOT: &str = "/run/containerd/runc/k8s.io";

/// Both CRI services over one connection.
#[derive(Clone)]
pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
    /// runc's state directory for the runtime's containers (for exec).
    pub runc_root: PathBuf,
}

impl Cri {
    pub async fn connect(socket: &Path) -> Result<Self, Error> {
        let path = socket.to_owned();
        let channel =
            Endpoint::from_static("http://[::]")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
                .map_err(|source| Error::Connect {
                    path: socket.to_owned(),
                    source,
                })?;
        Ok(Self {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            runc_root: PathBuf::from(DEFAULT_RUNC_ROOT),
        })
    }

    /// The runtime's own view of whether it is ready, and why not.
    pub async fn ready(&self) -> Result<(), String> {
        let status = self
            .runtime
            .clone()
            .status(k8s_cri::v1::StatusRequest { verbose: false })
            .await
            .map_err(|e| e.message().to_owned())?
            .into_inner();
        let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
        match conditions.iter().find(|c| !c.status) {
            None => Ok(()),
            Some(c) => Err(format!("{} is false: {} {}", c.r#type, c.reason, c.message)),
        }
    }

    /// Every image name the runtime holds (its ID when untagged), with
    /// the image's size in bytes.
    pub async fn image_sizes(&self) -> Result<Vec<(String, u64)>, Error> {
        let images = self
            .images
            .clone()
            .list_images(k8s_cri::v1::ListImagesRequest { filter: None })
            .await?
            .into_inner()
            .images;
        Ok(images
            .into_iter()
            .flat_map(|i| {
                let names = if i.repo_tags.is_empty() {
                    vec![i.id]
                } else {
                    i.repo_tags
                };
                names.into_iter().map(move |n| (n, i.size))
            })
            .collect())
    }
}
